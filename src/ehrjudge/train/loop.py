"""The loop shared by the three trainers: data order, reference, optimizer, validation, checkpoints, tracking.

A trainer module (expected.py, reinforce.py, grpo.py) provides two functions:
    prepare(log_probs (B,10) detached-use, rewards (B,10), config, generator) -> state   (sampling, advantages)
    loss(log_probs (B,10), rewards (B,10), ref_log_probs (B,10) | None, state, config) -> (loss, stats)
Everything else (which records, when to validate, what to save) lives here.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import random
import time
from pathlib import Path

import numpy as np
import torch

from ehrjudge.config import save_config
from ehrjudge.errors import ConfigError
from ehrjudge.io import write_json
from ehrjudge.judge.calibration import fit_calibration, save_calibration
from ehrjudge.train import expected, grpo, reinforce
from ehrjudge.train.checkpoint import load_latest, rng_states, restore_rng, save_checkpoint
from ehrjudge.train.config import TrainConfig
from ehrjudge.train.data import load_schema, load_split, resolve_dataset
from ehrjudge.train.package import package_run
from ehrjudge.train.policy import LabelPolicy
from ehrjudge.train.rewards import entropy, reward_table
from ehrjudge.tracking import Tracker
from ehrjudge.train.validate import validate

log = logging.getLogger(__name__)

METHODS = {"expected": expected, "reinforce": reinforce, "grpo": grpo}
COLLAPSE_ENTROPY = 0.05  # nats; log(10) = 2.30 is uniform
COLLAPSE_SHARE = 0.8  # one label taking > 80% of validation predictions


@dataclasses.dataclass
class Progress:
    """Where the run stands; saved in every checkpoint so a resumed run continues identically."""

    step: int = 0
    epoch: int = 0
    batch_in_epoch: int = 0  # micro-batches of this epoch's order already consumed
    best_spearman: float = -math.inf
    best_step: int = -1
    seconds: float = 0.0  # training wall time before this process


def seed_everything(seed: int) -> torch.Generator:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    return torch.Generator().manual_seed(seed)


def attach_trainable(model, config: TrainConfig):
    """LoRA adapters on the top `train_layers` layers (PEFT), or full fine-tuning of those layers (lora_r 0)."""
    n_layers = model.config.num_hidden_layers
    if config.train_layers < 0 or config.train_layers > n_layers:
        raise ConfigError(f"train_layers must be in 0..{n_layers}, got {config.train_layers}")
    layers = list(range(n_layers - config.train_layers, n_layers)) if config.train_layers else None
    for parameter in model.parameters():
        parameter.requires_grad_(False)
    if config.lora_r > 0:
        from peft import LoraConfig, get_peft_model

        adapter = LoraConfig(r=config.lora_r, lora_alpha=config.lora_alpha, lora_dropout=config.lora_dropout,
                             target_modules=list(config.lora_target_modules), layers_to_transform=layers,
                             task_type="CAUSAL_LM")
        return get_peft_model(model, adapter)
    modules = [model.model.layers[i] for i in layers] if layers else [model]
    for module in modules:
        for parameter in module.parameters():
            parameter.requires_grad_(True)
    return model


def schedule(total_updates: int, warmup: int):
    """Linear warmup to the peak, then linear decay to 10% of it at the last update."""

    def factor(update: int) -> float:
        if update < warmup:
            return (update + 1) / warmup
        span = max(total_updates - warmup, 1)
        return max(0.1, 1.0 - 0.9 * (update - warmup) / span)

    return factor


def step_budget(config: TrainConfig, steps_per_epoch: int) -> tuple[int, str]:
    """(optimizer steps, which budget sets them): max_steps or epochs, whichever ends first."""
    if config.epochs < 1 or config.max_steps < 0:
        raise ConfigError(f"epochs must be >= 1 and max_steps >= 0, got {config.epochs} and {config.max_steps}")
    by_epochs = config.epochs * steps_per_epoch
    if config.max_steps > 0 and config.max_steps <= by_epochs:
        return config.max_steps, "max_steps"
    return by_epochs, "epochs"


def batch_indices(progress: Progress, n_records: int, batch_size: int, seed: int) -> list[int]:
    """The next micro-batch in a per-epoch permutation that depends only on (seed, epoch): resumable."""
    per_epoch = math.ceil(n_records / batch_size)
    if progress.batch_in_epoch >= per_epoch:
        progress.epoch += 1
        progress.batch_in_epoch = 0
    order = np.random.default_rng([seed, progress.epoch]).permutation(n_records)
    start = progress.batch_in_epoch * batch_size
    progress.batch_in_epoch += 1
    return order[start:start + batch_size].tolist()


def save_model(model, tokenizer, directory: Path, extra=None) -> None:
    """An adapter dir (PEFT) or a full checkpoint, loadable by ehrjudge.judge.model.load_judge; `extra(tmp)` writes
    more files into the same atomic folder (the reward model's head)."""
    from ehrjudge.io import atomic_dir

    with atomic_dir(directory) as tmp:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        if extra is not None:
            extra(tmp)


def open_run(output_dir, saved, base: TrainConfig, model_and_tokenizer=None):
    """The start every trainer shares: OUT/ holding `saved` as config.yaml, torch threads and seeds set, the judge
    model (loaded, or the injected pair) with its trainable part attached, the dataset folder and its schema.
    Returns (run_dir, sampler, model, tokenizer, dataset_dir, schema)."""
    from ehrjudge.judge.model import load_judge

    run_dir = Path(output_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    save_config(saved, run_dir / "config.yaml")
    if base.num_threads > 0:
        torch.set_num_threads(base.num_threads)
    sampler = seed_everything(base.seed)
    model, tokenizer = model_and_tokenizer or load_judge(base.model, base.device, base.dtype)
    model = attach_trainable(model, base)
    dataset_dir = resolve_dataset(base.dataset)
    return run_dir, sampler, model, tokenizer, dataset_dir, load_schema(dataset_dir)


def train(config: TrainConfig, resume: bool = False, stop_at_step: int | None = None, model_and_tokenizer=None,
          show_progress: bool = True, shared_cache: dict | None = None, prompt_cache: dict | None = None,
          method_module=None) -> dict:
    """Train the judge; returns the summary also written to run_dir/summary.json.

    method_module: a trainer with prepare/loss as above, a `name` and `needs_reference` (then pi_ref is computed
    whatever kl_coef is), used instead of METHODS[config.method] (train/dpo.py).

    stop_at_step simulates a kill right after that step (tests); model_and_tokenizer injects a model (tests).
    shared_cache (a dict, initially empty) carries the frozen lower-layer and reference caches from one run
    to the next run on the same prompts and base model (the ablation grid), so each cell skips the frozen pass.
    prompt_cache (a dict, initially empty) does the same by prompt text, for runs on overlapping record sets
    (the leave-one-family-out folds): a record already seen by an earlier run skips the frozen pass.
    """
    from rich.progress import BarColumn, Progress as Bar, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    if method_module is None and config.method not in METHODS:
        raise ConfigError(f"method must be one of {list(METHODS)}")
    method = method_module or METHODS[config.method]
    method_name = getattr(method_module, "name", config.method)
    needs_reference = config.kl_coef > 0 or getattr(method_module, "needs_reference", False)
    run_dir, sampler, model, tokenizer, dataset_dir, schema = open_run(config.output_dir, config, config,
                                                                        model_and_tokenizer)
    train_split = load_split(dataset_dir, "train", tokenizer, config.prompt, schema, limit=config.train_records,
                             seed=config.seed)
    val_split = load_split(dataset_dir, "val", tokenizer, config.prompt, schema, limit=config.val_records,
                           seed=config.seed)
    policy = LabelPolicy(model, tokenizer, train_split.prompts + val_split.prompts, config.train_layers,
                         config.cache_lower_layers)
    if shared_cache is not None:
        if shared_cache.setdefault("prompts", policy.prompts) != policy.prompts:
            raise ConfigError("shared_cache was filled for other prompts (train_records/val_records/prompt differ)")
        policy.hidden_cache = shared_cache.setdefault("hidden", policy.hidden_cache)
        policy.reference_cache = shared_cache.setdefault("reference", policy.reference_cache)
    if prompt_cache is not None:
        restore_prompt_cache(policy, prompt_cache, config)
    val_indices = list(range(len(train_split), len(train_split) + len(val_split)))
    iterations = config.grpo_iterations if method is grpo else 1
    steps_per_epoch = math.ceil(math.ceil(len(train_split) / config.batch_size) / config.grad_accum)
    total_steps, budget = step_budget(config, steps_per_epoch)
    parameters = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(parameters, lr=config.learning_rate, weight_decay=config.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, schedule(total_steps * iterations, config.warmup_steps))
    progress = Progress()
    if resume:
        saved = load_latest(run_dir, model)
        optimizer.load_state_dict(saved["optimizer"])
        scheduler.load_state_dict(saved["scheduler"])
        restore_rng(saved["rng"], sampler)
        progress = Progress(**saved["progress"])
        policy.reference_cache.update(saved["reference_cache"])
        log.info("resumed from step %d", progress.step)
    elif needs_reference and config.lora_r == 0:
        # Full fine-tuning changes the weights the reference is read from: cache pi_ref before any update.
        for start in range(0, len(train_split), config.batch_size):
            policy.reference(list(range(start, min(start + config.batch_size, len(train_split)))))
    tracker = Tracker(run_dir, config.tracking, config, resume=resume)
    log.info("training %s on %d records (%d val), %d steps of %d x %d, %d trainable parameters",
             method_name, len(train_split), len(val_split), total_steps, config.batch_size, config.grad_accum,
             sum(p.numel() for p in parameters))
    started = time.perf_counter() - progress.seconds
    scores = torch.tensor(train_split.scores)
    use_caps = config.reward_after_caps and train_split.caps is not None
    caps = torch.tensor(train_split.caps) if use_caps else None  # (n,) rewards read answers after these
    if use_caps:
        log.info("rewards read each answer after its cap line's cap (reward_after_caps): %.0f%% of training records "
                 "carry a cap below 10", 100 * float((train_split.caps < 10).mean()))
    last_val: dict = {}
    last_val_step = -1
    last_calibration = None  # fitted at the latest validation, saved with final/
    step_seconds: list[float] = []

    def checkpoint() -> None:
        progress.seconds = time.perf_counter() - started
        state = {"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                 "rng": rng_states(sampler), "progress": dataclasses.asdict(progress),
                 "reference_cache": dict(policy.reference_cache)}
        save_checkpoint(run_dir, progress.step, model, state, config.keep_checkpoints)

    def run_validation() -> dict:
        nonlocal last_val, last_val_step, last_calibration
        model.eval()
        metrics, expected_scores = validate(policy, val_indices, val_split.scores, config.batch_size,
                                            config.prediction, val_split.caps if use_caps else None)
        model.train()
        calibration = None
        if len(val_indices) >= 3:
            calibration = fit_calibration(expected_scores, val_split.scores,
                                          f"val ({len(val_indices)} records) at step {progress.step}")
        tracker.log({f"eval/{k}": v for k, v in metrics.items() if isinstance(v, float)}, progress.step)
        if metrics["entropy"] < COLLAPSE_ENTROPY or metrics["top_label_share"] > COLLAPSE_SHARE:
            log.warning("policy collapse at step %d: mean entropy %.3f nats, label %d takes %.0f%% of validation "
                        "predictions", progress.step, metrics["entropy"], metrics["top_label"],
                        100 * metrics["top_label_share"])
        if metrics["spearman"] > progress.best_spearman:
            progress.best_spearman, progress.best_step = metrics["spearman"], progress.step
            save_model(model, tokenizer, run_dir / "best")
            write_json(run_dir / "best" / "validation.json",
                       {"step": progress.step, **metrics,
                        "calibration": dataclasses.asdict(calibration) if calibration else None})
            save_calibration(calibration, run_dir / "best")
        last_val, last_val_step = metrics, progress.step
        last_calibration = calibration
        return metrics

    if progress.step == 0:
        run_validation()  # the untrained judge: the baseline that training must beat
    model.train()
    wall_limit = config.max_wall_minutes * 60 if config.max_wall_minutes > 0 else math.inf
    stopped_by = budget
    columns = (TextColumn("[bold]{task.description}"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
               TextColumn("{task.fields[info]}"), TimeElapsedColumn(), TimeRemainingColumn())
    with Bar(*columns, disable=not show_progress, transient=False) as bar:
        task = bar.add_task(f"train {method_name}", total=total_steps, completed=progress.step, info="")
        while progress.step < total_steps:
            if time.perf_counter() - started > wall_limit:
                stopped_by = "wall time"
                tracker.log({"train/wall_cap_fired": 1.0, "train/wall_minutes": (time.perf_counter() - started) / 60},
                            progress.step)
                log.warning("safety stop at step %d of %d: max_wall_minutes %.1f reached; the budget is %d steps, "
                            "so this run is not reproducible", progress.step, total_steps, config.max_wall_minutes,
                            total_steps)
                break
            step_start = time.perf_counter()
            micro_batches = [batch_indices(progress, len(train_split), config.batch_size, config.seed)
                             for _ in range(config.grad_accum)]
            stats_sum: dict[str, float] = {}
            prepared = []
            for iteration in range(iterations):
                optimizer.zero_grad(set_to_none=True)
                for micro, indices in enumerate(micro_batches):
                    rewards = reward_table(scores[indices], config.reward,
                                           None if caps is None else caps[indices])  # (B, 10)
                    ref = policy.reference(indices) if needs_reference else None
                    log_probs = policy.log_probs(indices)  # (B, 10), with grad
                    if iteration == 0:
                        prepared.append(method.prepare(log_probs, rewards, config, sampler))
                    loss, stats = method.loss(log_probs, rewards, ref, prepared[micro], config)
                    (loss / config.grad_accum).backward()
                    if iteration == 0:
                        stats.update({"train/loss": loss.item(),
                                      "train/entropy": entropy(log_probs.detach()).mean().item(),
                                      "train/judge_mean": _judge(log_probs.detach(), config.prediction).mean().item(),
                                      "train/score_mean": scores[indices].float().mean().item()})
                        for key, value in stats.items():
                            stats_sum[key] = stats_sum.get(key, 0.0) + value / config.grad_accum
                        if config.debug:
                            _debug(progress.step, micro, log_probs.detach(), scores[indices], prepared[micro], config)
                if config.max_grad_norm > 0:
                    torch.nn.utils.clip_grad_norm_(parameters, config.max_grad_norm)
                optimizer.step()
                scheduler.step()
            progress.step += 1
            step_seconds.append(time.perf_counter() - step_start)
            if progress.step % config.log_every == 0 or progress.step == total_steps:
                stats_sum["train/lr"] = scheduler.get_last_lr()[0]
                stats_sum["train/seconds_per_step"] = step_seconds[-1]
                tracker.log(stats_sum, progress.step)
            bar.update(task, advance=1, info=f"loss {stats_sum['train/loss']:.3f} "
                                             f"val rho {last_val.get('spearman', float('nan')):.3f}")
            if progress.step % config.eval_every == 0:
                run_validation()
            if progress.step % config.checkpoint_every == 0:
                checkpoint()
            if stop_at_step is not None and progress.step >= stop_at_step:
                tracker.close()
                return {"stopped_by": "stop_at_step", "step": progress.step}
    if last_val_step != progress.step:
        run_validation()
    checkpoint()
    if prompt_cache is not None:
        keep_prompt_cache(policy, prompt_cache)
    save_model(model, tokenizer, run_dir / "final")
    save_calibration(last_calibration, run_dir / "final")
    tracker.close()
    summary = {"method": method_name, "steps": progress.step, "epochs_completed": progress.epoch,
               "stopped_by": stopped_by, "wall_cap_fired": stopped_by == "wall time", "budget_steps": total_steps,
               "train_seconds": time.perf_counter() - started,
               "seconds_per_step_median": float(np.median(step_seconds)) if step_seconds else None,
               "train_records": len(train_split), "val_records": len(val_split),
               "best_step": progress.best_step, "best_val_spearman": progress.best_spearman,
               "final_validation": {k: v for k, v in last_val.items()}, "run_dir": str(run_dir),
               "final_calibration": dataclasses.asdict(last_calibration) if last_calibration else None,
               "dataset": str(dataset_dir),
               "hidden_cache_mb": sum(a.numel() * a.element_size() + b.numel() * b.element_size()
                                      for a, b in policy.hidden_cache.values()) / 2**20}
    if model_and_tokenizer is None:  # an injected model (tests) has no base model to name
        package_run(run_dir, config, dataset_dir, summary)
    write_json(run_dir / "summary.json", summary)
    return summary


def restore_prompt_cache(policy: LabelPolicy, prompt_cache: dict, config: TrainConfig) -> None:
    """Fill the policy's index-keyed caches from a prompt-keyed one made with the same frozen layers."""
    key = {"model": config.model, "train_layers": config.train_layers, "dtype": config.dtype,
           "kl_coef_positive": config.kl_coef > 0, "full_fine_tuning": config.lora_r == 0}
    if prompt_cache.setdefault("key", key) != key:
        raise ConfigError(f"prompt_cache was filled under other settings ({prompt_cache['key']}, now {key})")
    hidden, reference = prompt_cache.setdefault("hidden", {}), prompt_cache.setdefault("reference", {})
    for index, prompt in enumerate(policy.prompts):
        if prompt in hidden:
            policy.hidden_cache[index] = hidden[prompt]
        if prompt in reference:
            policy.reference_cache[index] = reference[prompt]


def keep_prompt_cache(policy: LabelPolicy, prompt_cache: dict) -> None:
    """Add the policy's caches to the prompt-keyed one, for the next run."""
    prompt_cache["hidden"].update({policy.prompts[i]: value for i, value in policy.hidden_cache.items()})
    prompt_cache["reference"].update({policy.prompts[i]: value for i, value in policy.reference_cache.items()})


def _judge(log_probs: torch.Tensor, prediction: str) -> torch.Tensor:
    from ehrjudge.train.rewards import expected_label

    return expected_label(log_probs) if prediction == "expected" else log_probs.argmax(-1).float() + 1


def _debug(step: int, micro: int, log_probs, scores, state: dict, config) -> None:
    """The original design's debug prints: judge vs target per record, label counts, advantages."""
    argmax = (log_probs.argmax(-1) + 1).tolist()
    counts = torch.bincount(log_probs.argmax(-1), minlength=10).tolist()
    log.info("step %d.%d judge %s | target %s", step, micro, [round(v, 2) for v in _judge(log_probs, "expected")
                                                            .tolist()], scores.tolist())
    log.info("step %d.%d argmax labels %s | label counts 1..10 %s", step, micro, argmax, counts)
    if "actions" in state:
        log.info("step %d.%d sampled %s | advantages %s", step, micro, (state["actions"] + 1).tolist(),
                 [round(v, 3) for v in state["advantage"].flatten().tolist()])
