"""Held-out evaluation of a trained judge on test and test_unseen, beside the zero-shot judge and a regressor.

Per split: the original design's block (verifiable vs RLVR score mean/std, Pearson, Spearman) plus MAE,
within-1 agreement and 95% bootstrap intervals (ehrjudge.judge.agreement). Higher is better for the
correlations ([-1, 1]) and within-1 ([0, 1]); lower is better for MAE ([0, 9]) and |mean judge - mean score|.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from pathlib import Path

import numpy as np

from ehrjudge.cohort.reference_stats import ReferenceStats
from ehrjudge.cohort.schema import Schema
from ehrjudge.errors import InputError
from ehrjudge.judge.agreement import agreement
from ehrjudge.judge.baseline import fit_regressor, load_split
from ehrjudge.judge.calibration import saved_calibration
from ehrjudge.judge.prompt import PromptConfig, saved_prompt
from ehrjudge.judge.scoring import judge_records

log = logging.getLogger(__name__)
EVAL_SPLITS = ("test", "test_unseen")
CALIBRATED_ROW = "RLVR judge (calibrated expected score)"  # affine map fitted on val (judge/calibration.py)


def training_prompt(model_path: Path) -> PromptConfig:
    """The prompt the judge was trained with (saved beside the checkpoint), else the default."""
    return saved_prompt(model_path) or PromptConfig()


def find_baseline_report(dataset: Path, split: str, search: list[Path]) -> dict | None:
    """A zero-shot report (ehrjudge baseline's report.json) for `split` under the given dirs, if any."""
    for root in search:
        for path in sorted(Path(root).glob("**/report.json")):
            report = json.loads(path.read_text())
            if report.get("split") == split and "agreement" in report:
                log.info("zero-shot judge for %s read from %s", split, path)
                return report
    return None


def evaluate_judge(model: str | Path, dataset: str | Path, splits=EVAL_SPLITS, zero_shot: str = "auto",
                   baseline_dirs: list[Path] | None = None, batch_size: int = 8, n_bootstrap: int = 1000,
                   seed: int = 0, limit: int = 0) -> dict:
    """Agreement of the trained judge (expected score and argmax), the zero-shot judge and a regressor.

    zero_shot: "auto" reads an existing baseline report (else computes), "compute", or "skip".
    """
    from ehrjudge.judge.model import load_judge

    model, dataset = Path(model), Path(dataset)
    schema = Schema.load(dataset / "reference" / "schema.json")
    prompt = training_prompt(model)
    calibration = saved_calibration(model)
    reference = ReferenceStats.from_dir(dataset / "reference")
    judge, tokenizer = load_judge(str(model))
    train_records, train_scores = load_split(dataset, "train", schema)
    regressor = fit_regressor("hist_gradient_boosting", train_records[schema.names].to_numpy(), train_scores, seed)
    base = None
    result: dict = {"model": str(model), "dataset": str(dataset), "prompt": prompt.__dict__, "splits": {},
                    "calibration": dataclasses.asdict(calibration) if calibration else None}
    for split in splits:
        records, true_scores = load_split(dataset, split, schema)
        if limit and limit < len(records):
            chosen = np.sort(np.random.default_rng(seed).choice(len(records), limit, replace=False))
            records, true_scores = records.iloc[chosen].reset_index(drop=True), true_scores[chosen]
        start = time.perf_counter()
        judged = judge_records(judge, tokenizer, records, schema, prompt, batch_size, reference=reference)
        seconds = time.perf_counter() - start
        rows = {"RLVR judge (expected score)": judged["expected_score"].to_numpy(),
                "RLVR judge (argmax label)": judged["judge_score"].to_numpy().astype(float)}
        if calibration is not None:
            rows[CALIBRATED_ROW] = calibration(judged["expected_score"].to_numpy())
        zero = find_baseline_report(dataset, split, baseline_dirs or [dataset]) if zero_shot == "auto" else None
        if zero is None and zero_shot in ("auto", "compute"):
            if base is None:
                base = load_judge(None)
            zero_judged = judge_records(base[0], base[1], records, schema, PromptConfig(), batch_size)
            rows["Zero-shot judge (expected score)"] = zero_judged["expected_score"].to_numpy()
            rows["Zero-shot judge (argmax label)"] = zero_judged["judge_score"].to_numpy().astype(float)
        rows["Regressor (hist_gradient_boosting) on patient vectors"] = np.clip(
            np.rint(regressor.predict(records[schema.names].to_numpy())), 1, 10)
        split_result = {"n_records": int(len(records)), "judge_seconds": seconds,
                        "verifiable": {"mean": float(true_scores.mean()), "std": float(true_scores.std(ddof=1))},
                        "rows": {name: agreement(values, true_scores, seed=seed, n_bootstrap=n_bootstrap)
                                 for name, values in rows.items()}}
        if zero is not None:
            split_result["rows"].update({f"Zero-shot judge ({name}, from report)": value
                                         for name, value in zero["agreement"].items()})
        result["splits"][split] = split_result
    return result


def original_block(split_result: dict, row: str = "RLVR judge (expected score)") -> str:
    """The original design's printout for one split."""
    verifiable, judged = split_result["verifiable"], split_result["rows"][row]
    if judged is None:
        raise InputError(f"no row {row!r}")

    def fmt(value):
        return "n/a" if value is None else f"{value:.4f}"

    return "\n".join([
        f"Baseline Realism Scores: Mean={verifiable['mean']:.4f}, Std={verifiable['std']:.4f}",
        f"RLVR Model Realism Scores: Mean={judged['judge_mean']:.4f}, Std={judged['judge_std']:.4f}",
        f"Pearson Correlation: {fmt(judged['pearson'])}",
        f"Spearman Correlation: {fmt(judged['spearman'])}",
    ])
