"""Benchmark: leave-one-family-out agreement of the formula, the regressor and a briefly trained judge.

    python benchmarks/lofo.py [--dataset DIR] [--cohort DIR] [--scorers formula,regressor,judge] [--judge-steps 60]
                              [--out runs/lofo] [--results benchmarks/results/lofo.json] [--key value ...]

Without --dataset, builds (once, cached) a 6,000-record judge dataset in which every generator family of synth/generators.py is
a candidate and none is kept for test_unseen only, from --cohort (default: the default clinosim cohort, 500
patients, seed 42, built if absent), so every family has records in train and test. Extra `--key value` flags set
LofoConfig fields (train/lofo.py), e.g. `--judge.learning-rate 1e-3 --test-records 60`. Prints the per-family table
and writes the result (per fold and the mean over folds, with 95% bootstrap intervals) to --results.
Target (issue 15): judge >= regressor on the mean Spearman.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DATASET_NAME = "lofo-clinosim-n500-s42-6000"  # every family in the pool, no unseen-only family (+ cache_name's)


def cache_name(config, cohort: Path | None = None) -> str:
    """The cached dataset's folder name: the family count and a hash of the whole DatasetConfig (score included) and
    of the cohort folder it is built from (None: the default clinosim cohort)."""
    from ehrjudge.config import to_dict

    inputs = {"config": to_dict(config), "cohort": None if cohort is None else str(Path(cohort).resolve())}
    key = hashlib.sha256(json.dumps(inputs, sort_keys=True, default=str).encode()).hexdigest()[:10]
    return f"{DATASET_NAME}-{len(config.generators)}f-{key}"


def all_family_dataset(cohort: Path | None) -> Path:
    """The judge dataset over every generator family, built once per dataset configuration and cohort (cache_name):
    a dataset labelled under other score defaults, or built from another cohort, is never reused (until 2026-12-07
    the name held only the family count)."""
    from ehrjudge.cohort.build import build_cohort
    from ehrjudge.paths import cache_dir
    from ehrjudge.synth.dataset import DatasetConfig, build_dataset
    from ehrjudge.synth.generators import GENERATORS

    config = DatasetConfig(size=6000, generators=list(GENERATORS), unseen_generators=[], unseen_fraction=0.0)
    out = cache_dir("datasets") / cache_name(config, cohort)
    if (out / "train.parquet").exists():
        return out
    if cohort is None:
        cohort = cache_dir("cohorts") / "clinosim-n500-s42"
        if not (cohort / "vectors.parquet").exists():
            build_cohort("clinosim", cohort, None, 500, 42)
    return build_dataset(cohort, out, config)


def main(argv: list[str]) -> dict:
    from ehrjudge.config import load_config
    from ehrjudge.io import write_json
    from ehrjudge.train.lofo import LofoConfig, run_lofo, table_text

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default=None)
    parser.add_argument("--cohort", default=None)
    parser.add_argument("--scorers", default="formula,regressor,judge")
    parser.add_argument("--judge-steps", type=int, default=60, help="judge optimizer steps per fold")
    parser.add_argument("--out", default=str(ROOT / "runs" / "lofo"))
    parser.add_argument("--results", default=str(ROOT / "benchmarks" / "results" / "lofo.json"))
    args, flags = parser.parse_known_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")

    dataset = Path(args.dataset) if args.dataset else all_family_dataset(Path(args.cohort) if args.cohort else None)
    config = load_config(LofoConfig, None, flags + ["--dataset", str(dataset), "--output-dir", args.out,
                                                    "--scorers", args.scorers,
                                                    "--judge.max-steps", str(args.judge_steps),
                                                    "--judge.eval-every", str(args.judge_steps)])
    start = time.perf_counter()
    result = run_lofo(config)
    result["wall_seconds"] = time.perf_counter() - start
    write_json(args.results, result)
    print(table_text(result))
    print(f"wall time {result['wall_seconds'] / 60:.1f} min -> {args.results}")
    return result


if __name__ == "__main__":
    main(sys.argv[1:])
