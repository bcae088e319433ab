"""`ehrjudge tune-generator`: warm start -> RL against a reward -> evaluation beside the Gaussian copula.

OUT/
  config.yaml            the TuneConfig
  warm_start/            the warm start's LoRA adapter and sft.json (its loss curve); reused when present
  checkpoints/, latest.json   the RL adapter, optimizer, RNG and history every checkpoint_every steps (resume)
  metrics.jsonl          per-step figures (tensorboard/ and MLflow too, names prefixed tune/)
  generator/             the tuned generator (generator/model.py), loadable without this run
  samples.parquet        the evaluation records of the tuned generator
  summary.json           the evaluation table (tuned, warm start when measured, gaussian_copula) and timings
  report.html            the table and the curves

A run killed mid-way resumes from its last checkpoint with the same command; the sampling seed of step s is
seed * 100003 + s, so a resumed run draws the same completions as an uninterrupted one.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import numpy as np
import torch

from ehrjudge.cohort.schema import Cohort
from ehrjudge.config import save_config
from ehrjudge.errors import InputError
from ehrjudge.generator.evaluate import evaluate_samples, step_metrics, with_failures
from ehrjudge.generator.grpo import advantages, grpo_loss
from ehrjudge.generator.model import sample_records, save_generator
from ehrjudge.generator.record_text import RecordFormat
from ehrjudge.generator.rewards import build_reward, verifiable_scorers
from ehrjudge.io import atomic_dir, write_json, write_parquet

log = logging.getLogger(__name__)

SEED_STRIDE = 100003


def find_holdout(reference_dir: Path, holdout_dir: Path | None) -> Cohort | None:
    """The held-out real cohort: --holdout, else the judge dataset's holdout/ beside the reference."""
    if holdout_dir is not None:
        return Cohort.load(holdout_dir)
    sibling = Path(reference_dir).parent / "holdout"
    return Cohort.load(sibling) if (sibling / "vectors.parquet").exists() else None


def _load_judge(judge_dir, reference_dir, batch_size, holdout_dir=None):
    from ehrjudge.api import Judge

    # fp32: the reward of a training run is the same on every machine; a findings_dcr judge reads the patients
    return Judge.load(judge_dir, reference=reference_dir, batch_size=batch_size, precision="float32",
                      holdout=holdout_dir)


def _warm_start(model, tokenizer, texts, config, folder: Path):
    """The merged warm-start model: trained and saved to `folder`, or loaded from it when a run left it there."""
    from peft import PeftModel

    from ehrjudge.generator.sft import warm_start

    if (folder / "adapter_config.json").exists():
        log.info("warm start: reusing %s", folder)
        return PeftModel.from_pretrained(model, folder).merge_and_unload()
    start = time.perf_counter()
    peft_model, history = warm_start(model, tokenizer, texts, config)
    with atomic_dir(folder) as tmp:
        peft_model.save_pretrained(tmp)
        write_json(tmp / "sft.json", {"steps": config.sft_steps, "seconds": time.perf_counter() - start,
                                      "history": history})
    return peft_model.merge_and_unload()


def _rewards(reward_fn, samples, config) -> np.ndarray:
    values = reward_fn.score(samples.records) if len(samples.records) else np.array([])
    return with_failures(np.asarray(values, dtype=np.float64), samples, config.parse_failure_reward)


def reinforce(policy, tokenizer, fmt, reward_fn, verifiable, config, out: Path, tracker) -> list[dict]:
    """config.steps GRPO steps (resuming from OUT/checkpoints); the per-step history."""
    from ehrjudge.train.checkpoint import load_latest, save_checkpoint

    parameters = [p for p in policy.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(parameters, lr=config.rl_learning_rate, weight_decay=0.0)
    history: list[dict] = []
    if (out / "latest.json").exists():
        state = load_latest(out, policy)
        optimizer.load_state_dict(state["optimizer"])
        history = state["history"]
        log.info("resuming RL at step %d", len(history))
    for step in range(len(history) + 1, config.steps + 1):
        times = {}
        start = time.perf_counter()
        samples = sample_records(policy, tokenizer, fmt, config.group_size, config.max_new_tokens,
                                 config.temperature, config.seed * SEED_STRIDE + step, "rl", config.group_size)
        times["generate"] = time.perf_counter() - start
        start = time.perf_counter()
        rewards = _rewards(reward_fn, samples, config)
        times["reward"] = time.perf_counter() - start
        start = time.perf_counter()
        policy.train()
        loss, parts = grpo_loss(policy, samples.ids, samples.mask, advantages(torch.tensor(rewards, dtype=torch.float32)),
                                config.kl_coef)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if config.max_grad_norm > 0:
            torch.nn.utils.clip_grad_norm_(parameters, config.max_grad_norm)
        optimizer.step()
        policy.eval()
        times["update"] = time.perf_counter() - start
        metrics = step_metrics(samples, verifiable, rewards, reward_fn.on_score_scale)
        row = {"step": step, **{f"rl/{k}": v for k, v in metrics.items()}, **parts,
               **{f"time/{k}": v for k, v in times.items()}}
        history.append(row)
        tracker.log({f"tune/{k}": v for k, v in row.items() if k != "step"}, step)
        log.info("rl step %d/%d reward %.2f hardened %.2f parse-fail %.2f kl %.3f (gen %.1f s, reward %.1f s, "
                 "update %.1f s)", step, config.steps, metrics["reward_mean"], metrics["hardened_mean"],
                 metrics["parse_failure_rate"], parts["rl/kl"], times["generate"], times["reward"], times["update"])
        if step % config.checkpoint_every == 0 or step == config.steps:
            save_checkpoint(out, step, policy, {"optimizer": optimizer.state_dict(), "history": history}, keep=1)
    return history


def evaluation_rows(policy, tokenizer, fmt, reference, holdout, verifiable, reward_fn, judge_fn, config) -> dict:
    """{row name: figures}: the tuned generator's samples and the Gaussian copula's, on eval_records each."""
    from ehrjudge.generator.model import Samples
    from ehrjudge.synth.generators import generate

    start = time.perf_counter()
    samples = sample_records(policy, tokenizer, fmt, config.eval_records, config.max_new_tokens, config.temperature,
                             config.seed * SEED_STRIDE, f"tuned-{config.reward}", config.eval_batch_size)
    seconds = time.perf_counter() - start
    reward = reward_fn.score if reward_fn is not None else None
    judge = judge_fn.score if judge_fn is not None else None
    on_scale = reward_fn is not None and reward_fn.on_score_scale
    rows = {"tuned": evaluate_samples(samples, reference, holdout, verifiable, reward, judge,
                                      config.parse_failure_reward, on_scale)}
    rows["tuned"]["records_per_second"] = config.eval_records / seconds
    copula = generate("gaussian_copula", reference, config.eval_records, 0.0, config.seed)
    names = reference.schema.names
    copula_samples = Samples(copula[["record_id", "generator", *names]].reset_index(drop=True), [],
                             np.ones(len(copula), dtype=bool), [])
    rows["gaussian_copula"] = evaluate_samples(copula_samples, reference, holdout, verifiable, reward, judge,
                                               config.parse_failure_reward, on_scale)
    return rows, samples


def tune_generator(reference_dir, out, config, holdout_dir=None, judge_dir=None) -> dict:
    """Run the whole command; returns summary.json's content."""
    from ehrjudge.judge.model import load_judge
    from ehrjudge.tracking import Tracker

    reference_dir, out = Path(reference_dir), Path(out)
    if config.reward == "judge" and judge_dir is None:
        raise InputError("--reward judge needs --judge DIR (a trained judge folder)")
    reference = Cohort.load(reference_dir)
    holdout = find_holdout(reference_dir, holdout_dir)
    if holdout is not None:
        reference.schema.check_same(holdout.schema, file=holdout_dir or reference_dir.parent / "holdout")
    out.mkdir(parents=True, exist_ok=True)
    save_config(config, out / "config.yaml")
    if config.num_threads:
        torch.set_num_threads(config.num_threads)
    timings = {}
    fmt = RecordFormat(reference.schema, config.digits)
    verifiable = verifiable_scorers(reference, holdout)
    judge = (_load_judge(judge_dir, reference_dir, config.judge_batch_size, holdout_dir) if judge_dir is not None
             else None)
    reward_fn = build_reward(config.reward, reference_dir, reference, verifiable, judge)
    judge_fn = build_reward("judge", reference_dir, reference, verifiable, judge) if judge is not None else None

    start = time.perf_counter()
    model, tokenizer = load_judge(config.model)
    texts = [fmt.to_text(v) for v in reference.matrix()]
    policy = _warm_start(model, tokenizer, texts, config, out / "warm_start")
    timings["warm_start_s"] = time.perf_counter() - start

    history = []
    if config.steps > 0:
        from ehrjudge.generator.policy import add_lora

        policy = add_lora(policy, config.lora_r, config.lora_alpha, config.train_layers, config.seed + 1)
        tracker = Tracker(out, config.tracking, config, resume=(out / "latest.json").exists())
        start = time.perf_counter()
        try:
            history = reinforce(policy, tokenizer, fmt, reward_fn, verifiable, config, out, tracker)
        finally:
            tracker.close()
        timings["rl_s"] = time.perf_counter() - start

    with atomic_dir(out / "generator") as tmp:
        save_generator(tmp, reference.schema, config, len(history), out / "warm_start",
                       policy if config.steps > 0 else None)
    start = time.perf_counter()
    rows, samples = evaluation_rows(policy, tokenizer, fmt, reference, holdout, verifiable, reward_fn, judge_fn,
                                    config)
    timings["evaluation_s"] = time.perf_counter() - start
    write_parquet(out / "samples.parquet", samples.records)
    summary = {"reward": config.reward, "rl_steps": len(history), "eval_records": config.eval_records,
               "rows": rows, "timings": timings, "history": history,
               "parse_failures": samples.failures[:20],
               "runaway_step": runaway_step(history)}
    write_json(out / "summary.json", summary)
    from ehrjudge.generator.report import write_report

    write_report(out, summary)
    return summary


def runaway_step(history: list[dict], limit: float = 0.5, window: int = 5) -> int | None:
    """The first step at which the hacking gap, averaged over the last `window` steps, exceeds `limit` points
    (the reward started to run away from the verifiable score); None if it never does or is undefined."""
    gaps = [row["rl/hacking_gap"] for row in history if "rl/hacking_gap" in row]
    for end in range(1, len(gaps) + 1):
        if np.mean(gaps[max(0, end - window):end]) > limit:
            return int(history[end - 1]["step"])
    return None
