"""Held-out evaluation of a trained judge on test and test_unseen, beside the zero-shot judge and cheap scorers.

Per split: the original design's block (verifiable vs RLVR score mean/std, Pearson, Spearman) plus MAE,
within-1 agreement and 95% bootstrap intervals (ehrjudge.judge.agreement). Higher is better for the
correlations ([-1, 1]) and within-1 ([0, 1]); lower is better for MAE ([0, 9]) and |mean judge - mean score|.
Beside the judges, the diagonal-z formula and the regressor (judge.baseline_scorers), every row with its
records/s, and each split's records/s of the verifiable score itself.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from pathlib import Path

import numpy as np

from ehrjudge.cohort.schema import Schema
from ehrjudge.errors import InputError
from ehrjudge.judge.agreement import agreement
from ehrjudge.judge.baseline import FACTS_ROW, FORMULA_ROW
from ehrjudge.judge.baseline_scorers import FACTS, FORMULA, REGRESSOR, VERIFIABLE, BaselineScorers, load_split
from ehrjudge.judge.calibration import saved_calibration
from ehrjudge.judge.prompt import PromptConfig, saved_prompt
from ehrjudge.judge.reference import dataset_reference
from ehrjudge.judge.scoring import judge_records, judge_score

log = logging.getLogger(__name__)
EVAL_SPLITS = ("test", "test_unseen")
CALIBRATED_ROW = "RLVR judge (calibrated expected score)"  # affine map fitted on val (judge/calibration.py)
CAPPED_ROW = "RLVR judge (capped score)"  # min(expected, the cap its cap line states): judge/scoring.py


def training_prompt(model_path: Path) -> PromptConfig:
    """The prompt the judge was trained with (saved with the checkpoint); a folder that records none is refused."""
    prompt = saved_prompt(model_path)
    if prompt is None:
        raise InputError("the judge folder records no prompt (ehrjudge.json or the training config.yaml), so it "
                         "cannot be scored with the prompt it was trained on", file=model_path)
    return prompt


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
    reference = dataset_reference(dataset, prompt.record_format)
    judge, tokenizer = load_judge(str(model))
    cheap = BaselineScorers.fit(dataset, schema, reference, seed=seed)
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
        judge_speed = len(records) / max(seconds, 1e-9)
        rows = {"RLVR judge (expected score)": judged["expected_score"].to_numpy(),
                "RLVR judge (argmax label)": judged["judge_score"].to_numpy().astype(float)}
        if "capped_score" in judged:  # a judge reading a cap line: min(expected, that cap), its reward and gate score
            rows[CAPPED_ROW] = judged["capped_score"].to_numpy()
        speeds = dict.fromkeys(rows, judge_speed)
        if calibration is not None:
            rows[CALIBRATED_ROW] = judge_score(judged, calibration)
            speeds[CALIBRATED_ROW] = judge_speed
        zero = find_baseline_report(dataset, split, baseline_dirs or [dataset]) if zero_shot == "auto" else None
        if zero is None and zero_shot in ("auto", "compute"):
            if base is None:
                base = load_judge(None)
            start = time.perf_counter()
            zero_judged = judge_records(base[0], base[1], records, schema, PromptConfig(), batch_size)
            zero_speed = len(records) / max(time.perf_counter() - start, 1e-9)
            rows["Zero-shot judge (expected score)"] = zero_judged["expected_score"].to_numpy()
            rows["Zero-shot judge (argmax label)"] = zero_judged["judge_score"].to_numpy().astype(float)
            speeds.update(dict.fromkeys(("Zero-shot judge (expected score)", "Zero-shot judge (argmax label)"),
                                        zero_speed))
        cheap_scores, cheap_speed = cheap.score(records)
        regressor_row = f"Regressor ({cheap.regressor_kind}) on patient vectors"
        rows[FORMULA_ROW], speeds[FORMULA_ROW] = cheap_scores["formula_score"].to_numpy(), cheap_speed[FORMULA]
        rows[regressor_row], speeds[regressor_row] = cheap_scores["regressor_score"].to_numpy(), cheap_speed[REGRESSOR]
        if "facts_score" in cheap_scores:
            rows[FACTS_ROW], speeds[FACTS_ROW] = cheap_scores["facts_score"].to_numpy(), cheap_speed[FACTS]
        split_result = {"n_records": int(len(records)), "judge_seconds": seconds,
                        "verifiable": {"mean": float(true_scores.mean()), "std": float(true_scores.std(ddof=1)),
                                       "records_per_second": cheap_speed.get(VERIFIABLE)},
                        "rows": {name: {**agreement(values, true_scores, seed=seed, n_bootstrap=n_bootstrap),
                                        "records_per_second": speeds.get(name)} for name, values in rows.items()}}
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
