"""The `findings` record text's check lines: what the hardened score's record checks found, in words.

    Distance from the reference centre: 1.8 times the median real patient's     with PromptConfig.show_typicality
                                                  (needs the patients): s_typicality's input, d / d_med
    Invalid values: 2 (Admissions count, Labs value min)          hard validity violations (caps the score at 2)
    Outside the reference range: 1                                soft ones (unusual values)
    Rules broken: 1 essential (male with pregnancy code), 4 important   the clinical rubric (essential caps at 4)
    Codes per table: diagnoses 3, labs 4, prescriptions 12 (z +3.1), procedures 0
    Closest reference patient: 0.42 of the near-copy distance (a near copy)      `findings_dcr` only: the privacy
                                                                                    cap's input (caps at 1 + 9 x ratio)
    Score cap: 4 (essential rule broken)          with PromptConfig.show_caps: the lowest cap those lines impose,
                                                  and which (min of invalid_cap, essential_cap, 1 + 9 min(1, ratio))

The checks are scoring/hardened/checks.py's, built from the judge's reference statistics (marginal facts only), so a
judge shows exactly what the verifiable score checks, and a judge folder holds no patient. What they cannot show is
whether a record copies a patient: that needs the patients. The `findings_dcr` format adds that line from the
patients attached to the statistics (judge/reference.py; scoring/hardened/privacy.py), for users who
hold the reference cohort and its held-out patients when judging.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from ehrjudge.cohort.reference_stats import CONSTANT_TOLERANCE, ReferenceStats
from ehrjudge.cohort.schema import Schema
from ehrjudge.cohort.text import feature_label, format_z
from ehrjudge.errors import InputError
from ehrjudge.io import check_finite
from ehrjudge.scoring.config import ScoreConfig
from ehrjudge.scoring.hardened.checks import RecordChecks
from ehrjudge.scoring.hardened.privacy import EXACT_COPY

SEVERITY_ORDER = ("essential", "important", "optional")  # scoring/rules.yaml's classes
SHOW_SPARSITY_Z = 2.0  # a table's codes-per-patient normal score is printed beyond this |z|


def finding_lines(records: pd.DataFrame, schema: Schema, reference: ReferenceStats | None,
                  closest: bool = False, caps: bool = False, typicality: bool = False) -> list[list[str]]:
    """Per row of `records` (schema columns, finite), its check lines; with `closest`, the closest reference
    patient's line too (needs reference.patients); with `caps`, a last line naming the score cap those lines
    impose (the hardened score's caps at the default ScoreConfig, as the checks themselves); with `typicality`, a
    first line with the record's distance from the reference's centre over held-out patients' median (needs
    reference.typicality, fitted on the patients)."""
    found = _check(records, schema, reference, closest, typicality)
    checks, ratios, typical = found["checks"], found["ratios"], found["typical"]
    labels = {f.name: feature_label(f) for f in schema.features}
    severity = {rule["id"]: rule["severity"] for rule in checks.rubric.rules}
    lines = []
    for i in range(len(found["counts"])):
        lines.append([
            *([] if typical is None else [_typicality_line(float(typical[i]))]),
            _invalid_line(int(found["n_invalid"][i]), found["invalid_columns"][i], labels),
            f"Outside the reference range: {int(found['n_unusual'][i]) or 'none'}",
            _rules_line(found["rule_violations"][i], severity),
            _codes_line(list(checks.groups), found["counts"][i], found["scores"][i]),
            *([] if ratios is None else [_closest_line(float(ratios[i]), str(found["copy_kind"][i]),
                                                        reference.patients.free_cells)]),
            *([_cap_line({reason: None if np.isnan(values[i]) else float(values[i])
                          for reason, values in found["caps"].items()})] if caps else []),
        ])
    return lines


def line_caps(records: pd.DataFrame, schema: Schema, reference: ReferenceStats | None,
              closest: bool = False) -> np.ndarray:
    """(n,) the cap the cap line states for each row (the lowest hardened cap that applies), 10 where none does.

    A judge that reads the line can still answer above it (a run trained on all 1,770 records paid an all-zero record
    9.8 under `Score cap: 2`, benchmarks/cap_enforcement.py); min(expected score, this) is the judge's capped score
    (judge.scoring.judge_records, `capped_score`), which no training run can reopen."""
    return _lowest_cap(_check(records, schema, reference, closest, False))


def _lowest_cap(found: dict) -> np.ndarray:
    """(n,) the lowest of the caps that apply, 10 where none does."""
    caps = np.fmin.reduce(list(found["caps"].values()))  # nan where no cap applies
    return np.where(np.isnan(caps), 10.0, caps)


def finding_facts(records: pd.DataFrame, schema: Schema, reference: ReferenceStats | None,
                  closest: bool = False, top: int = 6) -> np.ndarray:
    """(n, k) the numbers the findings text shows, for a regressor to read instead of a language model: sex, age and
    status, the counts of |z| > 3, > 2 and of values never seen in the reference, the `top` largest |z| (never seen:
    1e3), invalid and out-of-range counts, rules broken per severity class, codes per table and their normal scores,
    and with `closest` the closest-patient ratio; last, the score cap the lines impose (10 when none)."""
    found = _check(records, schema, reference, closest, False)
    z = _z_matrix(found["matrix"], reference)  # (n, p)
    finite = np.isfinite(z)
    magnitude = np.where(finite, np.abs(z), 1e3)
    largest = -np.sort(-magnitude, axis=1)[:, :top]
    names = schema.names
    demographics = [found["matrix"][:, names.index(name)] for name in ("gender", "age", "is_dead") if name in names]
    severity = {rule["id"]: rule["severity"] for rule in found["checks"].rubric.rules}
    broken = [[sum(severity[rule] == level for rule in violations.split(";") if rule) for level in SEVERITY_ORDER]
              for violations in found["rule_violations"]]
    return np.column_stack([*demographics, (finite & (np.abs(z) > 3)).sum(1), (finite & (np.abs(z) > 2)).sum(1),
                            (~finite).sum(1), largest, found["n_invalid"], found["n_unusual"],
                            np.asarray(broken, dtype=float).reshape(len(z), len(SEVERITY_ORDER)),
                            found["counts"], found["scores"],
                            *([] if found["ratios"] is None else [found["ratios"]]),
                            _lowest_cap(found)])


def _check(records: pd.DataFrame, schema: Schema, reference: ReferenceStats | None, closest: bool,
           typicality: bool) -> dict:
    """What both the lines and the facts read: the hardened record checks (scoring/hardened/checks.py) with the
    code counts, the closest-patient and typicality ratios when asked, and the caps (nan where one does not
    apply)."""
    if reference is None:
        raise InputError("record format 'findings' needs the reference cohort's statistics (reference=)")
    if typicality and reference.typicality is None:
        raise InputError("the typicality line (prompt.show_typicality) needs the reference patients and held-out "
                         "patients when judging (judge.reference.reference_for; on the command line --reference "
                         "and --holdout cohort folders); no judge folder stores patients")
    if closest and reference.patients is None:
        raise InputError("record format 'findings_dcr' needs the reference patients and held-out patients when "
                         "judging (judge.reference.reference_for; on the command line --reference and --holdout "
                         "cohort folders); no judge folder stores patients")
    missing = [name for name in schema.names if name not in records.columns]
    if missing:
        raise InputError(f"records lack {len(missing)} schema feature(s), e.g. {missing[:5]}", column=missing[0])
    check_finite(records, schema.names)
    matrix = records[schema.names].to_numpy(dtype=np.float64)  # (n, p)
    config = ScoreConfig()
    checks = RecordChecks(config, schema, reference)
    found, counts, scores = checks.check_with_counts(matrix)  # counts, scores: (n, tables)
    copy = reference.patients.copy_ratio(matrix) if closest else None
    ratios = None if copy is None else copy["ratio"]  # (n,) the privacy ratio (scoring/hardened/privacy.py)
    caps = {"invalid values": np.where(found["n_invalid"] > 0, config.invalid_cap, np.nan),
            "essential rule broken": np.where(found["essential_violated"], config.essential_cap, np.nan),
            "near copy": (np.full(len(matrix), np.nan) if ratios is None
                          else np.where(ratios < 1.0, 1.0 + 9.0 * ratios, np.nan))}
    return {**found, "matrix": matrix, "checks": checks, "counts": counts, "scores": scores, "ratios": ratios,
            "copy_kind": None if copy is None else np.where(
                copy["dcr"] <= EXACT_COPY, "identical", np.where(copy["edited"] <= EXACT_COPY, "edited", np.where(
                    copy["linked"] <= copy["ratio"], "linked", ""))),
            "typical": reference.typicality.ratio(matrix) if typicality else None, "caps": caps}


def _z_matrix(matrix: np.ndarray, reference: ReferenceStats) -> np.ndarray:
    """ReferenceStats.z_scores for every row at once: z, and +-inf for a value off a reference-constant column."""
    mean, std = reference.mean, reference.std
    tolerance = CONSTANT_TOLERANCE * np.maximum(1.0, np.abs(mean))
    delta = matrix - mean
    constant = std <= tolerance
    off = np.abs(delta) > tolerance
    with np.errstate(divide="ignore", invalid="ignore"):
        z = delta / np.where(constant, 1.0, std)
    return np.where(constant, np.where(off, np.copysign(np.inf, delta), 0.0), z)


def _cap_line(caps: dict[str, float | None]) -> str:
    """The lowest of the caps that apply (scoring/hardened/scorer.py's), with the reasons that reach it; one decimal,
    as the privacy cap is continuous."""
    applied = {reason: value for reason, value in caps.items() if value is not None}
    if not applied:
        return "Score cap: none"
    lowest = min(applied.values())
    reasons = [reason for reason, value in applied.items() if value <= lowest + 0.05]
    return f"Score cap: {lowest:.1f} ({', '.join(reasons)})".replace(".0 (", " (")


def _closest_line(ratio: float, copy_kind: str, free_cells: int) -> str:
    """The privacy ratio in words (scoring/hardened/privacy.py): identical, identical but for at most free_cells
    values, linked to a reference patient (copy_kind "identical", "edited", "linked"), closer than the near-copy
    distance, or how many times further."""
    if copy_kind == "identical":
        return "Closest reference patient: identical (a copy)"
    if copy_kind == "edited":
        cells = "one value" if free_cells == 1 else f"at most {free_cells} values"
        return f"Closest reference patient: identical but for {cells} (a copy)"
    if copy_kind == "linked":
        return "Closest reference patient: the same patient by record linkage (a near copy)"
    if ratio < 1.0:
        return f"Closest reference patient: {ratio:.2f} of the near-copy distance (a near copy)"
    return f"Closest reference patient: {min(ratio, 999.0):.{1 if ratio < 10 else 0}f} times the near-copy distance"


def _typicality_line(ratio: float) -> str:
    """d / d_med in words, two significant digits."""
    return f"Distance from the reference centre: {ratio:.{1 if ratio < 10 else 0}f} times the median real patient's"


def _invalid_line(n_invalid: int, columns: str, labels: dict) -> str:
    if not n_invalid:
        return "Invalid values: none"
    shown = [labels.get(name, name) for name in columns.split(";") if name and not name.startswith("+")]
    more = n_invalid - len(shown)
    return f"Invalid values: {n_invalid} ({', '.join(shown)}{f', +{more} more' if more > 0 else ''})"


def _rules_line(violations: str, severity: dict) -> str:
    """How many rules of each severity class the record breaks (what the rubric's pass rate weighs), naming the
    essential ones (each caps the score)."""
    ids = [rule for rule in violations.split(";") if rule]
    if not ids:
        return "Rules broken: none"
    parts = []
    for level in SEVERITY_ORDER:
        broken = [rule for rule in ids if severity[rule] == level]
        if broken:
            named = f" ({', '.join(rule.replace('_', ' ') for rule in broken)})" if level == "essential" else ""
            parts.append(f"{len(broken)} {level}{named}")
    return "Rules broken: " + ", ".join(parts)


def _codes_line(groups: list[str], counts: np.ndarray, scores: np.ndarray) -> str:
    if not groups:
        return "Codes per table: no code columns"
    parts = [f"{group} {int(count)}" + (f" (z {format_z(z)})" if abs(z) > SHOW_SPARSITY_Z else "")
             for group, count, z in zip(groups, counts, scores)]
    return "Codes per table: " + ", ".join(parts)
