"""Zero-shot baseline: how well the untrained judge agrees with the verifiable realism score (the original's Part 3).

Reports, on one split of a judge dataset: the score table (mean/std/min/max of the verifiable score, the judge's
argmax and expected scores, and the cheap scorers'), agreement metrics (judge.agreement), the 5 largest
disagreements with their record text, and beside the judge the non-LLM scorers a user could pick instead
(judge.baseline_scorers: the diagonal-z formula and a regressor), with every scorer's records/s and the
verifiable score's own.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from pathlib import Path

import numpy as np
import pandas as pd

from ehrjudge.cohort.real_patients import dataset_patients, near_copy_ids, real_rows, withhold
from ehrjudge.cohort.schema import Schema
from ehrjudge.config import save_config, to_dict
from ehrjudge.io import atomic_dir, write_csv, write_json, write_text
from ehrjudge.judge.agreement import agreement
from ehrjudge.judge.baseline_scorers import (FACTS, FORMULA, REGRESSOR, TRUE_SCORE, VERIFIABLE, BaselineScorers,
                                             load_split)
from ehrjudge.judge.layer_inputs import LayerCapture
from ehrjudge.judge.config import BaselineConfig
from ehrjudge.judge.reference import dataset_reference
from ehrjudge.judge.scoring import judge_records, record_texts, save_judge_config

log = logging.getLogger(__name__)
FORMULA_ROW = "Formula: diagonal z from the reference statistics (1..10 map fitted on val)"
FACTS_ROW = "Regressor on the findings text's facts (the checks, closest patient and score cap, as numbers)"


def score_row(name: str, values: np.ndarray) -> dict:
    return {"metric": name, "mean": float(np.mean(values)), "std": float(np.std(values, ddof=1)),
            "min": float(np.min(values)), "max": float(np.max(values))}


def largest_disagreements(table: pd.DataFrame, texts: list[str], n: int) -> list[dict]:
    """Rows with the largest |judge_score - realism_score|, ties broken by |expected_score - realism_score|."""
    gap = (table["judge_score"] - table[TRUE_SCORE]).abs()
    soft_gap = (table["expected_score"] - table[TRUE_SCORE]).abs()
    order = np.lexsort((-soft_gap.to_numpy(), -gap.to_numpy()))[:n]
    rows = []
    for i in order:
        row = table.iloc[i]
        rows.append({"record_id": str(row["record_id"]),
                     "generator": str(row["generator"]) if "generator" in table.columns else None,
                     "strength": float(row["strength"]) if "strength" in table.columns else None,
                     "realism_score": int(row[TRUE_SCORE]), "judge_score": int(row["judge_score"]),
                     "expected_score": float(row["expected_score"]), "record_text": texts[i]})
    return rows


def run_baseline(dataset: str | Path, out: str | Path, config: BaselineConfig | None = None,
                 capture: LayerCapture | None = None) -> dict:
    """Judge one split zero-shot, compare with the verifiable score and a regressor; write the report to `out`.

    `capture`: keep one decoder layer's inputs of the judging pass (judge.layer_inputs), for the trained judge.
    """
    from ehrjudge.judge.model import load_judge

    config = config or BaselineConfig()
    dataset, out = Path(dataset), Path(out)
    schema = Schema.load(dataset / "reference" / "schema.json")
    parts = [load_split(dataset, split, schema) for split in config.split.split("+")]
    records = pd.concat([p[0] for p in parts], ignore_index=True)
    true_scores = np.concatenate([p[1] for p in parts])
    if config.limit is not None and config.limit < len(records):
        chosen = np.sort(np.random.default_rng(config.seed).choice(len(records), config.limit, replace=False))
        records, true_scores = records.iloc[chosen].reset_index(drop=True), true_scores[chosen]
    if len(records) < 500:
        log.warning("baseline on %d records; the report is meant for >= 500", len(records))

    # captured layer inputs are reused as the fp32 model's (pipeline/run.py), so a capturing pass stays fp32
    precision = "float32" if capture is not None else config.judge.precision
    model, tokenizer = load_judge(config.judge.model, config.judge.device, config.judge.dtype, config.judge.adapter,
                                  precision)
    start = time.perf_counter()
    reference = dataset_reference(dataset, config.judge.prompt.record_format)
    judged = judge_records(model, tokenizer, records, schema, config.judge.prompt, config.judge.batch_size,
                           config.judge.reuse_prefix, reference, capture)
    judge_seconds = time.perf_counter() - start
    cheap = BaselineScorers.fit(dataset, schema, reference, config.regressor, config.seed)
    cheap_scores, speed = cheap.score(records)

    table = judged.copy()
    for column in ("generator", "strength"):
        if column in records.columns:
            table.insert(1, column, records[column].to_numpy())
    table[TRUE_SCORE] = true_scores.astype(int)
    table["formula_distance"] = cheap_scores["formula_distance"].to_numpy()
    table["formula_score"] = cheap_scores["formula_score"].to_numpy()
    table["regressor_score"] = cheap_scores["regressor_score"].to_numpy().astype(int)
    if "facts_score" in cheap_scores:
        table["facts_score"] = cheap_scores["facts_score"].to_numpy().astype(int)
    texts = record_texts(records, schema, tokenizer, config.judge.prompt, reference)
    judge_speed = len(records) / max(judge_seconds, 1e-9)
    scorers = {  # name -> (scores, records/s)
        "Judge score (argmax)": (table["judge_score"].to_numpy(), judge_speed),
        "Judge expected score": (table["expected_score"].to_numpy(), judge_speed),
        FORMULA_ROW: (table["formula_score"].to_numpy(), speed[FORMULA]),
        f"Regressor ({config.regressor}) on patient vectors": (table["regressor_score"].to_numpy(), speed[REGRESSOR]),
    }
    if "facts_score" in table:
        scorers[FACTS_ROW] = (table["facts_score"].to_numpy(), speed[FACTS])
    report = {
        "dataset": str(dataset), "split": config.split, "n_records": int(len(records)), "n_train": cheap.n_train,
        "judge_model": config.judge.model or "SmolLM2-135M-Instruct (default)",
        "judge_seconds": judge_seconds, "judge_records_per_second": judge_speed,
        "records_per_second": {"judge": judge_speed, **speed},
        "formula_calibration": dataclasses.asdict(cheap.formula.calibration) if cheap.formula.calibration else None,
        "score_table": [score_row("Verifiable realism_score", true_scores)]
                       + [score_row(name, values) for name, (values, _) in scorers.items()],
        "agreement": {name: {**agreement(values, true_scores, config.seed, config.n_bootstrap),
                             "records_per_second": rate} for name, (values, rate) in scorers.items()},
        "judge_score_histogram": {str(k): int((table["judge_score"] == k).sum()) for k in range(1, 11)},
        "mean_entropy_nats": float(table["entropy"].mean()),
        # real patients (held-out ones, exact copies) are listed by record_id and scores only
        "largest_disagreements": largest_disagreements(
            table, withhold(texts, real_rows(records, schema.names, dataset_patients(dataset))
                            | records["record_id"].astype(str).isin(near_copy_ids(dataset, config.split.split("+")))
                            .to_numpy()),
            config.n_disagreements),
        "config": to_dict(config),
    }
    with atomic_dir(out) as tmp:
        write_json(tmp / "report.json", report)
        write_text(tmp / "report.md", report_markdown(report))
        write_csv(tmp / "judge_scores.csv", table, float_format="%.10g")
        save_judge_config(config.judge, tokenizer, tmp / "judge_config.yaml")
        save_config(config, tmp / "config.yaml")
    return report


def _fmt(value, digits: int = 3) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def report_markdown(report: dict) -> str:
    lines = [f"# Zero-shot judge baseline ({report['split']} split, {report['n_records']} records)", "",
             f"Judge: {report['judge_model']}; dataset: `{report['dataset']}`; "
             f"{report['judge_records_per_second']:.2f} records/s.", "",
             "| Realism Score Metric | Mean | Std | Min | Max |", "|---|---:|---:|---:|---:|"]
    for row in report["score_table"]:
        lines.append(f"| {row['metric']} | " + " | ".join(_fmt(row[k], 2) for k in ("mean", "std", "min", "max"))
                     + " |")
    lines += ["", "## Agreement with the verifiable realism_score", "",
              "Pearson/Spearman: higher is better, [-1, 1], 95% bootstrap intervals. MAE: lower is better. "
              "Exact / within 1: higher is better, [0, 1]. Records/s: scoring only, fitting excluded.", "",
              "| Scorer | Pearson [95% CI] | Spearman [95% CI] | MAE | Exact | Within 1 | Records/s |",
              "|---|---|---|---:|---:|---:|---:|"]
    for name, m in report["agreement"].items():
        cells = []
        for kind in ("pearson", "spearman"):
            ci = m[f"{kind}_ci"]
            cells.append(f"n/a ({m['undefined'][kind]})" if m[kind] is None else
                         f"{m[kind]:.3f} [{ci[0]:.3f}, {ci[1]:.3f}]")
        lines.append(f"| {name} | {cells[0]} | {cells[1]} | {_fmt(m['mae'])} | {_fmt(m['exact'])} | "
                     f"{_fmt(m['within_1'])} | {_fmt(m.get('records_per_second'), 1)} |")
    verifiable = report.get("records_per_second", {}).get(VERIFIABLE)
    if verifiable is not None:
        lines += ["", f"The verifiable realism score itself: {verifiable:.1f} records/s."]
    histogram = ", ".join(f"{k}: {v}" for k, v in report["judge_score_histogram"].items())
    lines += ["", f"Judge score histogram: {histogram}. Mean entropy {report['mean_entropy_nats']:.3f} nats "
              "(uniform = 2.303).", "", "## Largest disagreements", ""]
    for i, row in enumerate(report["largest_disagreements"], 1):
        lines += [f"{i}. `{row['record_id']}` (generator {row['generator']}, strength {row['strength']}): "
                  f"verifiable {row['realism_score']}, judge {row['judge_score']} "
                  f"(expected {row['expected_score']:.2f})", "", "```", row["record_text"], "```", ""]
    return "\n".join(lines)
