"""Adversarial records built from a reference cohort: the holes a reward-optimizing generator would find.

Hack probes (a sound realism score gives each <= 3): exact copies of reference patients, near copies (continuous
columns moved by 1 % of their SD, counts kept), edited copies (one code the patient lacks added once: one cell far
from the source, which the plain distance to the closest patient took for a new patient), heavily edited copies
(eight codes the patient lacks added: beyond the edited-copy distance, caught by record linkage or not at all), the
reference's mean patient, an all-zero record, a real record with every code present, one column at 10x the reference
maximum (at least 10), and count columns tripled.
Reported beside them: the mean patient rounded onto the column kinds, two patients spliced (demographics of one,
everything else of another), rule violators next to their clean originals (a sex-specific code given to the other
sex), and real held-out patients (scored by a scorer calibrated on the other half of the holdout: cross-fitted, so
no patient calibrates its own score).
"""

from __future__ import annotations

import dataclasses
from typing import Callable

import numpy as np
import pandas as pd

from ehrjudge.cohort.schema import Cohort, Schema
from ehrjudge.errors import InputError
from ehrjudge.scoring.realism import RealismScorer, ScoreConfig
from ehrjudge.scoring.single_table.rules import load_rules, select_columns

HACK_PROBES = ("exact_copy", "near_copy", "edited_copy", "heavily_edited_copy", "mean_patient", "all_zero",
               "every_code_present", "column_10x_max", "counts_x3")
CONTEXT_PROBES = ("rounded_mean_patient", "spliced_patients", "rule_violator", "clean_original", "holdout_real")


def add_codes(records: np.ndarray, codes: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
    """A copy of `records` with k of the `codes` columns each record lacks (value 0) set to 1 (all of them where it
    lacks fewer): a copy edited in k cells."""
    edited = records.copy()
    for record in edited:
        absent = np.flatnonzero(codes & (record == 0))
        record[rng.choice(absent, size=min(k, len(absent)), replace=False)] = 1.0
    return edited


def build_probes(reference: np.ndarray, rows: np.ndarray, schema: Schema, seed: int) -> dict[str, np.ndarray]:
    """Probe name -> (m, p) records. Copies come from `reference`; every other probe starts from `rows`, real
    patients outside the reference, so that no probe scores low merely for copying."""
    rng = np.random.default_rng(seed)
    kinds = np.array([f.kind for f in schema.features])
    is_count, is_binary, is_continuous = kinds == "count", kinds == "binary", kinds == "continuous"
    codes = np.array([f.code is not None and f.kind != "continuous" for f in schema.features])
    demographics = np.array([f.group == "demographics" for f in schema.features])
    std, high, low = reference.std(axis=0), reference.max(axis=0), reference.min(axis=0)
    mean = reference.mean(axis=0, keepdims=True)
    copies = reference[rng.choice(len(reference), size=min(len(rows), len(reference)), replace=False)]  # (m, p)

    near = copies.copy()
    moved = is_continuous & (std > 0)
    near[:, moved] += rng.normal(0.0, 0.01, size=(len(near), int(moved.sum()))) * std[moved]
    near[:, moved & (low >= 0)] = np.maximum(near[:, moved & (low >= 0)], 0.0)
    edited, edits = copies.copy(), np.random.default_rng([seed, 3])  # own stream: the other probes stay as they were
    for record in edited:
        absent = np.flatnonzero(codes & (record == 0) & (high > 0))
        if len(absent):
            record[edits.choice(absent)] = 1.0
    heavy = add_codes(copies, codes & (high > 0), 8, np.random.default_rng([seed, 5]))  # own stream, as edited's
    every_code = rows.copy()
    every_code[:, codes] = np.maximum(every_code[:, codes], 1.0)
    ten_x = rows.copy()
    picked = rng.choice(np.flatnonzero(std > 0), size=len(rows))
    ten_x[np.arange(len(rows)), picked] = 10.0 * np.maximum(np.abs(high[picked]), 1.0)
    tripled = rows.copy()
    tripled[:, is_count] *= 3.0
    rounded = mean.copy()
    rounded[:, is_count | is_binary] = np.rint(rounded[:, is_count | is_binary])
    donors = rows[rng.permutation(len(rows))]
    spliced = np.where(demographics[None, :], rows, donors)
    violators, originals = rule_violators(rows, schema, rng)
    return {"exact_copy": copies, "near_copy": near, "edited_copy": edited, "heavily_edited_copy": heavy,
            "mean_patient": mean, "all_zero": np.zeros_like(mean), "every_code_present": every_code,
            "column_10x_max": ten_x, "counts_x3": tripled, "rounded_mean_patient": rounded, "spliced_patients": spliced,
            "rule_violator": violators, "clean_original": originals, "holdout_real": rows.copy()}


def rule_violators(rows: np.ndarray, schema: Schema, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """(violators, their clean originals): one sex-specific diagnosis of the other sex added to each record
    (and to its diagnoses_count), from the packaged rules' code lists; empty when the schema has none."""
    by_id = {rule["id"]: rule for rule in load_rules()}
    names = schema.names
    if "gender" not in names:
        return rows[:0], rows[:0]
    gender = names.index("gender")
    total = names.index("diagnoses_count") if "diagnoses_count" in names else None
    codes_for = {}
    for sex, rule_id in ((1.0, "male_with_pregnancy_code"), (1.0, "male_with_female_specific_code"),
                         (0.0, "female_with_male_specific_code")):
        selector = by_id[rule_id]["violation"]["all"][1]["columns"]
        codes_for.setdefault(sex, []).extend(select_columns(schema, selector).tolist())
    violators, originals = [], []
    for row in rows:
        candidates = codes_for.get(float(row[gender]), [])
        if not candidates:
            continue
        bad = row.copy()
        column = int(rng.choice(candidates))
        bad[column] += 1.0
        if total is not None and row[column] == 0:
            bad[total] += 1.0
        violators.append(bad)
        originals.append(row)
    if not violators:
        return rows[:0], rows[:0]
    return np.stack(violators), np.stack(originals)


def check_probe_inputs(reference: Cohort, holdout: Cohort) -> None:
    """The holdout has the reference's columns and enough patients for two calibration halves."""
    if reference.schema.names != holdout.schema.names:
        raise InputError("holdout cohort columns differ from the reference")
    if len(holdout) < 4:
        raise InputError(f"the holdout has {len(holdout)} patients; probes need at least 4 (two per half)")


def run_probes(reference: Cohort, holdout: Cohort, config: ScoreConfig, n: int, seed: int,
               scorers: dict[str, Callable[[np.ndarray], np.ndarray]] | None = None,
               cap: Callable[[np.ndarray], np.ndarray] | None = None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(per-record scores, probe table). Cross-fitted: the holdout is split in two halves; probes built from one half
    are scored by the hardened and seed scores calibrated on the other, so no held-out patient calibrates its own
    score. `scorers` adds name -> f(records) -> scores (a judge), called on the same records; `cap` (with a
    "judge" scorer) adds judge_capped = min(judge, cap(records)), the score of a judge reading a cap line."""
    check_probe_inputs(reference, holdout)
    matrix, held_out = reference.matrix(), holdout.matrix()
    order = np.random.default_rng([seed, 7]).permutation(len(held_out))
    halves = np.array_split(order, 2)
    frames = []
    for h in (0, 1):
        rows, calibration = held_out[np.sort(halves[h])], held_out[np.sort(halves[1 - h])]
        rows = rows[:max(1, n // 2)]
        fitted = {definition: RealismScorer(dataclasses.replace(config, definition=definition), reference.schema)
                  .fit(matrix, calibration) for definition in ("hardened", "seed")}
        for probe, records in build_probes(matrix, rows, reference.schema, seed + h).items():
            if not len(records):
                continue
            hardened = fitted["hardened"].score(records)
            frame = pd.DataFrame({"probe": probe, "half": h, "hardened": hardened["realism_continuous"],
                                  "seed": fitted["seed"].score(records)["realism_continuous"],
                                  "caps": hardened["caps"], "rule_violations": hardened["rule_violations"],
                                  "invalid_columns": hardened["invalid_columns"]})
            for name, score in (scorers or {}).items():
                frame[name] = score(records)
            if cap is not None:
                frame["judge_capped"] = np.minimum(frame["judge"].to_numpy(), cap(records))
            frames.append(frame)
    records = pd.concat(frames, ignore_index=True)
    return records, probe_table(records, ["hardened", "seed", *(scorers or {}),
                                          *(["judge_capped"] if cap is not None else [])])


def probe_table(records: pd.DataFrame, scorers: list[str]) -> pd.DataFrame:
    """One row per probe, in probe order: kind, n and the mean / median / max of each scorer's score."""
    rows = []
    for probe in [*HACK_PROBES, *CONTEXT_PROBES]:
        part = records[records.probe == probe]
        if part.empty:
            continue
        row = {"probe": probe, "kind": "hack" if probe in HACK_PROBES else "context", "n": int(len(part))}
        for scorer in scorers:
            row.update({f"{scorer}_mean": float(part[scorer].mean()), f"{scorer}_median": float(part[scorer].median()),
                        f"{scorer}_max": float(part[scorer].max())})
        rows.append(row)
    return pd.DataFrame(rows)


def markdown_table(table: pd.DataFrame) -> str:
    """The probe table as Markdown (numbers to 2 decimals)."""
    cells = [[f"{v:.2f}" if isinstance(v, float) else str(v) for v in row] for row in table.itertuples(index=False)]
    lines = ["| " + " | ".join(table.columns) + " |", "|" + "---|" * len(table.columns)]
    return "\n".join(lines + ["| " + " | ".join(row) + " |" for row in cells])
