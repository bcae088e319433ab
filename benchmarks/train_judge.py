"""Benchmark: train the default judge config within its wall-time budget, evaluate on test and test_unseen.

    python benchmarks/train_judge.py [--dataset DIR] [--config configs/train_default.yaml] [--out runs/bench]
                                     [--zero-shot auto|compute|skip] [--key value ...]

Prints and writes benchmarks/results/train_judge.json: Pearson, Spearman (+95% CIs), MAE, within-1, mean judge
vs mean score per split, training wall time, seconds per step, peak RSS of training vs the model alone.
Targets (issue 6): test Spearman and Pearson >= 0.85, test_unseen Spearman >= 0.70, |mean gap| <= 0.3,
training <= 30 min on 2 CPU cores.
"""

from __future__ import annotations

import argparse
import logging
import resource
import sys
import time
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parents[1]


def rss_mb() -> float:
    return psutil.Process().memory_info().rss / 2**20


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def main(argv: list[str]) -> dict:
    from ehrjudge.config import load_config
    from ehrjudge.io import write_json
    from ehrjudge.judge.model import load_judge
    from ehrjudge.train.config import TrainConfig
    from ehrjudge.train.data import resolve_dataset
    from ehrjudge.train.evaluate import evaluate_judge
    from ehrjudge.train.loop import train

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default=str(ROOT / "configs" / "train_default.yaml"))
    parser.add_argument("--dataset", default=None)
    parser.add_argument("--out", default=str(ROOT / "runs" / "bench-train-judge"))
    parser.add_argument("--zero-shot", default="auto", choices=["auto", "compute", "skip"])
    parser.add_argument("--results", default=str(ROOT / "benchmarks" / "results" / "train_judge.json"))
    args, flags = parser.parse_known_args(argv)
    config = load_config(TrainConfig, args.config, flags + ["--output-dir", args.out]
                         + (["--dataset", args.dataset] if args.dataset else []))
    dataset = resolve_dataset(config.dataset)

    start = time.perf_counter()
    model, tokenizer = load_judge(config.model, config.device, config.dtype)
    model_rss = rss_mb()
    model_peak = peak_rss_mb()
    summary = train(config, model_and_tokenizer=(model, tokenizer))
    train_peak = peak_rss_mb()
    train_wall = time.perf_counter() - start
    evaluation = evaluate_judge(Path(args.out) / "best", dataset, zero_shot=args.zero_shot,
                                baseline_dirs=[dataset, Path(args.out)])
    result = {
        "config": args.config, "flags": flags, "dataset": str(dataset), "run_dir": args.out,
        "train": summary, "train_wall_seconds_incl_load": train_wall,
        "rss_mb": {"model_alone": model_rss, "peak_before_training": model_peak, "peak_training": train_peak,
                   "hidden_cache_mb": summary.get("hidden_cache_mb")},
        "evaluation": evaluation,
        "cpu": {"logical_cores": psutil.cpu_count(), "load_average_at_end": list(psutil.getloadavg())},
    }
    write_json(args.results, result)
    print_result(result)
    return result


def print_result(result: dict) -> None:
    from ehrjudge.cli.train import evaluation_text

    train_summary = result["train"]
    print(evaluation_text(result["evaluation"]))
    print(f"training: {train_summary['steps']} steps, {train_summary['epochs_completed']} full epochs, "
          f"{train_summary['train_seconds'] / 60:.1f} min ({train_summary['stopped_by']}), "
          f"median {train_summary['seconds_per_step_median']:.2f} s/step; best val Spearman "
          f"{train_summary['best_val_spearman']:.3f} at step {train_summary['best_step']}")
    rss = result["rss_mb"]
    print(f"RSS: model alone {rss['model_alone']:.0f} MiB, peak during training {rss['peak_training']:.0f} MiB "
          f"(hidden-state cache {rss['hidden_cache_mb']:.0f} MiB)")
    print(f"CPU load average at end: {result['cpu']['load_average_at_end']} (2 cores shared with other jobs "
          f"make timings noisy)")


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    main(sys.argv[1:])
