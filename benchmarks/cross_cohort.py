"""Another cohort without retraining: issue 15's test of whether the trained judge travels to another schema.

    python benchmarks/cross_cohort.py [--judge runs/default/judge] [--default-run runs/default] [--country JP]
        [--seed 7] [--patients 500] [--size 1500] [--dataset-seed N] [--out benchmarks/results/cross_cohort.json]

1. A second reference cohort: clinosim with another country and seed (cohort/clinosim.simulate_patients), exported
   as FHIR R4 and loaded with the project's `--source fhir` loader (cohort/build.build_cohort, what `ehrjudge cohort
   --source fhir` runs). Its columns are the codes that cohort holds, so the schema differs from the default one.
2. Its judge dataset: synth/dataset.build_dataset (what `ehrjudge dataset` and the run's dataset stage call) with
   the default run's dataset settings (runs/default/dataset/config.yaml), only `size` smaller, so it has its own
   test split labelled by its own verifiable (hardened) score.
3. Its test split scored WITHOUT retraining by
   - the default run's trained judge, given the new cohort's schema and reference statistics (Judge.load's
     `reference=`): its prompt (the `deviations` or `findings` text it was trained with) shows each value's z
     against the NEW reference, and findings also what the hardened checks find against it; its score is the
     judge's score (judge.scoring.judge_score: capped_score where it reads a cap line), its expected score alone
     beside it (`judge_expected`);
   - the diagonal-z formula on the new reference statistics, its 1..10 map fitted on the new val split;
   - the regressor cannot run: it was fitted on the default cohort's columns.
   The same scorers on the default cohort's own test split are shown for comparison (the judge's figures read from
   the default run's summary.json, the formula and regressor recomputed).
Target (issue 15): cross-cohort Spearman >= 0.9.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import platform
import tempfile
import time
from pathlib import Path

import numpy as np

from ehrjudge.api import Judge
from ehrjudge.cohort.build import build_cohort
from ehrjudge.cohort.clinosim import simulate_patients
from ehrjudge.cohort.featurize import FeatureConfig
from ehrjudge.cohort.reference_stats import ReferenceStats
from ehrjudge.cohort.schema import Schema
from ehrjudge.config import load_config
from ehrjudge.io import write_json
from ehrjudge.judge.agreement import agreement
from ehrjudge.judge.baseline_scorers import BaselineScorers, FormulaScorer, load_split, records_per_second
from ehrjudge.judge.reference import dataset_reference
from ehrjudge.judge.scoring import judge_score
from ehrjudge.synth.dataset import DatasetConfig, build_dataset

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results" / "cross_cohort.json"
FHIR_FOLDER = "fhir_r4"  # clinosim's FHIR R4 output, beside csv/
NOT_APPLICABLE = "not applicable (trained on the default cohort's columns)"


def second_cohort(out: Path, patients: int, seed: int, country: str) -> Path:
    """Simulate `patients` patients of `country` with `seed`, export FHIR, build the cohort from the FHIR files.

    strict false: clinosim JP writes a newborn whose birthDate falls after the cohort's last encounter (a negative
    age), which the strict loader refuses; that patient is left out.
    """
    if (out / "vectors.parquet").exists():
        return out
    with tempfile.TemporaryDirectory(prefix=".clinosim-", dir=out.parent) as work:
        csv_dir = simulate_patients(patients, seed, Path(work), formats=("csv", "fhir"), country=country)
        build_cohort("fhir", out, path=csv_dir.parent / FHIR_FOLDER, patients=patients,
                     config=FeatureConfig(strict=False))
    return out


def judge_dataset(cohort: Path, out: Path, default_run: Path, size: int, seed: int | None = None) -> Path:
    """The default run's dataset settings with `size` records (and `seed`, when given), built on `cohort`."""
    if not (out / "test.parquet").exists():
        overrides = {"size": size} | ({} if seed is None else {"seed": seed})
        config = load_config(DatasetConfig, default_run / "dataset" / "config.yaml", overrides)
        build_dataset(cohort, out, config)
    return out


def cross_cohort_scores(judge: Judge, dataset: Path, split: str = "test", seed: int = 0,
                        n_bootstrap: int = 1000) -> dict:
    """Agreement with `dataset`'s verifiable score on `split` of `judge` (any schema: it is handed the dataset's
    schema and reference statistics) and of the formula on the dataset's reference statistics (map fitted on val).
    """
    schema = Schema.load(dataset / "reference" / "schema.json")
    reference = dataset_reference(dataset, judge.prompt.record_format)  # with its patients for findings_dcr
    judge = dataclasses.replace(judge, schema=schema, reference=reference)
    records, true_scores = load_split(dataset, split, schema)
    val_records, val_scores = load_split(dataset, "val", schema)
    formula = FormulaScorer.fit(reference, val_records[schema.names].to_numpy(dtype=np.float64), val_scores)
    formula_scores, formula_speed = records_per_second(formula.score, records[schema.names].to_numpy(np.float64))
    judged, judge_speed = records_per_second(judge.score, records)
    # The judge's score: capped_score where it reads a cap line (judge_score); no calibration, which was fitted on
    # the default cohort's val split. Its expected score alone beside it.
    return {
        "judge": {**agreement(judge_score(judged), true_scores, seed, n_bootstrap),
                  "records_per_second": judge_speed, "score": "capped_score" if "capped_score" in judged
                  else "expected_score"},
        "judge_expected": {**agreement(judged["expected_score"].to_numpy(), true_scores, seed, n_bootstrap),
                           "records_per_second": judge_speed},
        "formula": {**agreement(formula_scores, true_scores, seed, n_bootstrap), "records_per_second": formula_speed},
    }


def default_cohort_scores(default_run: Path, seed: int = 0, n_bootstrap: int = 1000) -> dict:
    """The default cohort's test split: the trained judge from summary.json, formula and regressor recomputed."""
    dataset = default_run / "dataset"
    schema = Schema.load(dataset / "reference" / "schema.json")
    reference = ReferenceStats.from_dir(dataset / "reference")
    cheap = BaselineScorers.fit(dataset, schema, reference, seed=seed)
    records, true_scores = load_split(dataset, "test", schema)
    table, speed = cheap.score(records)
    splits = json.loads((default_run / "summary.json").read_text())["splits"]["test"]
    summary = splits.get("trained_capped", splits["trained"])  # the judge's score (judge_score)
    keep = ("pearson", "pearson_ci", "spearman", "spearman_ci", "mae", "n", "records_per_second")
    return {
        "judge": {**{k: summary[k] for k in keep}, "from": str(default_run / "summary.json")},
        "formula": {**agreement(table["formula_score"].to_numpy(), true_scores, seed, n_bootstrap),
                    "records_per_second": speed["formula"]},
        "regressor": {**agreement(table["regressor_score"].to_numpy(), true_scores, seed, n_bootstrap),
                      "records_per_second": speed["regressor"]},
    }


def interval(row: dict, kind: str) -> str:
    low, high = row[f"{kind}_ci"]
    return f"{row[kind]:.3f} [{low:.3f}, {high:.3f}]"


def print_table(result: dict) -> None:
    schemas = result["schemas"]
    print(f"default cohort {schemas['default_columns']} columns, second cohort ({result['second_cohort']['country']}, "
          f"seed {result['second_cohort']['seed']}, FHIR) {schemas['second_columns']} columns, "
          f"{schemas['shared_columns']} shared")
    print(f"{'cohort':8s} {'scorer':14s} {'n':>4s}  {'Spearman [95% CI]':26s} {'Pearson [95% CI]':26s} "
          f"{'records/s':>10s}")
    for cohort, rows in (("default", result["default_test"]), ("second", result["second_test"])):
        for name in ("judge", "judge_expected", "formula", "regressor"):
            if name not in rows:
                continue
            row = rows[name]
            if isinstance(row, str):
                print(f"{cohort:8s} {name:14s} {'':>4s}  {row}")
                continue
            print(f"{cohort:8s} {name:14s} {row['n']:4d}  {interval(row, 'spearman'):26s} "
                  f"{interval(row, 'pearson'):26s} {row['records_per_second']:10.1f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--judge", type=Path, default=ROOT / "runs" / "default" / "judge")
    parser.add_argument("--default-run", type=Path, default=ROOT / "runs" / "default")
    parser.add_argument("--country", default="JP")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--patients", type=int, default=500)
    parser.add_argument("--size", type=int, default=1500, help="second dataset's records (test ~ 1/6 of them)")
    parser.add_argument("--dataset-seed", type=int, default=None,
                        help="seed of the second dataset's generators, selection and splits (default: the run's)")
    parser.add_argument("--work", type=Path, default=ROOT / "runs" / "cross-cohort")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)

    start = time.perf_counter()
    cohort = second_cohort(args.work / "cohort", args.patients, args.seed, args.country)
    dataset = judge_dataset(cohort, args.work / "dataset", args.default_run, args.size, args.dataset_seed)
    default_names = set(Schema.load(args.default_run / "dataset" / "reference" / "schema.json").names)
    second_names = set(Schema.load(dataset / "reference" / "schema.json").names)
    second = cross_cohort_scores(Judge.load(args.judge, precision="float32"), dataset)
    result = {
        "machine": platform.processor() or platform.machine(), "judge": str(args.judge),
        "second_cohort": {"country": args.country, "seed": args.seed, "patients": args.patients,
                          "source": "clinosim FHIR R4 -> --source fhir", "dataset_size": args.size,
                          "dataset_seed": args.dataset_seed},
        "schemas": {"default_columns": len(default_names), "second_columns": len(second_names),
                    "shared_columns": len(default_names & second_names)},
        "default_test": default_cohort_scores(args.default_run),
        "second_test": {**second, "regressor": NOT_APPLICABLE},
        "wall_seconds": time.perf_counter() - start,
    }
    write_json(args.out, result)
    print_table(result)
    print(f"-> {args.out} ({result['wall_seconds'] / 60:.1f} min)")


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    main()
