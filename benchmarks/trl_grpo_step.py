"""Benchmark: TRL's GRPOTrainer vs ehrjudge's own `grpo` loop, seconds per step on the default model and data.

    pip install -e .[bench]            # trl (not a runtime dependency)
    python benchmarks/trl_grpo_step.py [--steps 4] [--records 8] [--group-size 4]

Both train LoRA (r 16, alpha 32) on the top 4 of the 30 layers of SmolLM2-135M-Instruct with KL weight 0.05
to the adapter-off base, on the default dataset's training prompts (configs/train_default.yaml prompt), and
reward r = 1 - (|j - s| / 9)^2.
  * TRL: `GRPOTrainer` samples `group_size` completions of up to 4 new tokens per prompt with `generate`, parses
    the integer (an unparsable completion gets reward 0: nothing constrains it to the labels), then re-scores
    the completions with the policy (with grad) and the reference. `--records` prompts per step.
  * ehrjudge: `method: grpo` with the same group size samples labels from the exact 10-label distribution of
    one forward (train/grpo.py); first-visit steps include the frozen lower-layer pass, later ones reuse it.
Writes benchmarks/results/trl_grpo_step.json (--out; the run with TRL's activation checkpointing on is kept as
trl_grpo_step_checkpointing.json) and prints seconds per step and per record.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import logging
import re
import statistics
import sys
import tempfile
import time
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "trl_grpo_step.json"


def reward_from_text(completions, score, **_) -> list[float]:
    """The original's reward on the first integer 1..10 in a completion; 0 when there is none."""
    rewards = []
    for text, target in zip(completions, score):
        match = re.search(r"\b(10|[1-9])\b", text)
        rewards.append(0.0 if match is None else 1.0 - (abs(int(match.group(1)) - int(target)) / 9) ** 2)
    return rewards


class StepTimer:
    """A transformers TrainerCallback that records the wall time of every optimizer step."""

    def __init__(self):
        from transformers import TrainerCallback

        timer = self

        class _Callback(TrainerCallback):
            def on_step_begin(self, args, state, control, **kwargs):
                timer.started = time.perf_counter()

            def on_step_end(self, args, state, control, **kwargs):
                timer.seconds.append(time.perf_counter() - timer.started)

        self.seconds: list[float] = []
        self.started = 0.0
        self.callback = _Callback()


def run_trl(prompts: list[str], scores: list[int], args) -> dict:
    from datasets import Dataset
    from peft import LoraConfig
    from trl import GRPOConfig, GRPOTrainer

    from ehrjudge.judge.model import load_judge

    model, tokenizer = load_judge(None)
    n_layers = model.config.num_hidden_layers
    peft_config = LoraConfig(r=16, lora_alpha=32, lora_dropout=0.0, task_type="CAUSAL_LM",
                             target_modules=["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj",
                                             "down_proj"],
                             layers_to_transform=list(range(n_layers - 4, n_layers)))
    data = Dataset.from_dict({"prompt": prompts, "score": scores})
    timer = StepTimer()
    with tempfile.TemporaryDirectory() as out:
        config = GRPOConfig(output_dir=out, per_device_train_batch_size=args.records * args.group_size,
                            num_generations=args.group_size, max_completion_length=4, max_steps=args.steps + 1,
                            learning_rate=2e-3, beta=0.05, logging_steps=1, save_strategy="no", report_to="none",
                            use_cpu=True, bf16=False, seed=0, dataloader_num_workers=0,
                            gradient_checkpointing=args.trl_gradient_checkpointing)
        trainer = GRPOTrainer(model=model, processing_class=tokenizer, reward_funcs=[reward_from_text],
                              args=config, train_dataset=data, peft_config=peft_config, callbacks=[timer.callback])
        start = time.perf_counter()
        trainer.train()
        total = time.perf_counter() - start
    steps = timer.seconds[1:]  # the first step also builds the trainer's state
    rewards = [entry["reward"] for entry in trainer.state.log_history if "reward" in entry]
    return {"steps_timed": len(steps), "seconds_per_step": steps, "median_seconds_per_step": statistics.median(steps),
            "records_per_step": args.records, "completions_per_step": args.records * args.group_size,
            "median_seconds_per_record": statistics.median(steps) / args.records, "total_seconds": total,
            "first_step_seconds": timer.seconds[0], "mean_reward_logged": rewards}


def run_ours(dataset: Path, args) -> dict:
    from ehrjudge.config import load_config
    from ehrjudge.train.config import TrainConfig
    from ehrjudge.train.loop import train

    with tempfile.TemporaryDirectory() as out:
        # train_records = 2 steps' worth: steps 1-2 visit new records (frozen pass), 3.. reuse the cache.
        config = load_config(TrainConfig, ROOT / "configs" / "train_default.yaml", [
            "--method", "grpo", "--group-size", str(args.group_size), "--batch-size", "8",
            "--train-records", "16", "--val-records", "8", "--max-steps", str(args.steps + 2),
            "--eval-every", "1000", "--checkpoint-every", "1000", "--tracking", "none", "--log-every", "1",
            "--max-wall-minutes", "0", "--output-dir", out, "--dataset", str(dataset)])
        start = time.perf_counter()
        summary = train(config, show_progress=False)
        total = time.perf_counter() - start
        lines = [json.loads(line) for line in (Path(out) / "metrics.jsonl").read_text().splitlines()]
    seconds = [line["train/seconds_per_step"] for line in lines if "train/seconds_per_step" in line]
    first, cached = seconds[:2], seconds[2:]
    return {"first_visit_seconds_per_step": first, "cached_seconds_per_step": cached,
            "median_cached_seconds_per_step": statistics.median(cached), "records_per_step": 8,
            "labels_sampled_per_step": 8 * args.group_size,
            "median_cached_seconds_per_record": statistics.median(cached) / 8,
            "median_first_visit_seconds_per_record": statistics.median(first) / 8, "total_seconds": total,
            "steps": summary["steps"]}


def main(argv: list[str]) -> dict:
    from ehrjudge.config import load_config
    from ehrjudge.io import write_json
    from ehrjudge.judge.model import load_judge
    from ehrjudge.train.config import TrainConfig
    from ehrjudge.train.data import load_schema, load_split, resolve_dataset

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=4, help="timed steps of each")
    parser.add_argument("--records", type=int, default=2, help="prompts per TRL step (x group size completions)")
    parser.add_argument("--group-size", type=int, default=4)
    parser.add_argument("--dataset", default=None)
    parser.add_argument("--trl-gradient-checkpointing", action="store_true",
                        help="keep TRL's default activation checkpointing (off here: it saves memory at a cost of "
                             "50.3 vs 36.1 s/step, Zen 2, 2026-12-01)")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    dataset = resolve_dataset(args.dataset)
    prompt = load_config(TrainConfig, ROOT / "configs" / "train_default.yaml", []).prompt
    _, tokenizer = load_judge(None)
    split = load_split(dataset, "train", tokenizer, prompt, load_schema(dataset), limit=args.records * (args.steps + 1),
                       seed=0)
    load_before = list(psutil.getloadavg())
    trl_result = run_trl(split.prompts, [int(s) for s in split.scores], args)
    ours = run_ours(dataset, args)
    result = {"trl": trl_result, "ehrjudge_grpo": ours, "group_size": args.group_size,
              "trl_version": importlib.metadata.version("trl"),
              "trl_gradient_checkpointing": args.trl_gradient_checkpointing,
              "speedup_per_record_cached": trl_result["median_seconds_per_record"]
              / ours["median_cached_seconds_per_record"],
              "speedup_per_record_first_visit": trl_result["median_seconds_per_record"]
              / ours["median_first_visit_seconds_per_record"],
              "cpu": {"logical_cores": psutil.cpu_count(), "load_average_before": load_before,
                      "load_average_after": list(psutil.getloadavg())}}
    write_json(args.out, result)
    print(f"TRL GRPOTrainer: {trl_result['median_seconds_per_step']:.1f} s/step for {args.records} prompts x "
          f"{args.group_size} completions ({trl_result['median_seconds_per_record']:.2f} s/record)")
    print(f"ehrjudge grpo:   {ours['median_cached_seconds_per_step']:.2f} s/step for 8 records x {args.group_size} "
          f"labels, cached ({ours['median_cached_seconds_per_record']:.3f} s/record); first visit "
          f"{ours['median_first_visit_seconds_per_record']:.3f} s/record")
    print(f"per record: {result['speedup_per_record_cached']:.0f}x faster cached, "
          f"{result['speedup_per_record_first_visit']:.0f}x on first visit; load {result['cpu']}")
    return result


if __name__ == "__main__":
    logging.basicConfig(level=logging.WARNING)
    main(sys.argv[1:])
