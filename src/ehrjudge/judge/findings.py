"""The `findings` record text's check lines: what the hardened score's record checks found, in words.

    Invalid values: 2 (Admissions count, Labs value min)          hard validity violations (caps the score at 2)
    Outside the reference range: 1                                soft ones (unusual values)
    Rules broken: 1 essential (male with pregnancy code), 4 important   the clinical rubric (essential caps at 4)
    Codes per table: diagnoses 3, labs 4, prescriptions 12 (z +3.1), procedures 0
    Closest reference patient: 0.42 of the near-copy distance (a near copy)      `findings_dcr` only: the privacy
                                                                                    cap's input (caps at 1 + 9 x ratio)

The checks are scoring/hardened/checks.py's, built from the judge's reference statistics (marginal facts only), so a
judge shows exactly what the verifiable score checks, and a judge folder holds no patient. What they cannot show is
whether a record copies a patient: that needs the patients. The `findings_dcr` format adds that line from the
patients attached to the statistics (judge/reference.py; scoring/hardened/privacy.py), for users who
hold the reference cohort and its held-out patients when judging.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from ehrjudge.cohort.reference_stats import ReferenceStats
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
                  closest: bool = False) -> list[list[str]]:
    """Per row of `records` (schema columns, finite), its check lines; with `closest`, the closest reference
    patient's line too (needs reference.patients)."""
    if reference is None:
        raise InputError("record format 'findings' needs the reference cohort's statistics (reference=)")
    if closest and reference.patients is None:
        raise InputError("record format 'findings_dcr' needs the reference patients and held-out patients when "
                         "judging (judge.reference.reference_for; on the command line --reference and --holdout "
                         "cohort folders); no judge folder stores patients")
    missing = [name for name in schema.names if name not in records.columns]
    if missing:
        raise InputError(f"records lack {len(missing)} schema feature(s), e.g. {missing[:5]}", column=missing[0])
    check_finite(records, schema.names)
    matrix = records[schema.names].to_numpy(dtype=np.float64)  # (n, p)
    checks = RecordChecks(ScoreConfig(), schema, reference)
    found, counts, scores = checks.check_with_counts(matrix)  # counts, scores: (n, tables)
    labels = {f.name: feature_label(f) for f in schema.features}
    severity = {rule["id"]: rule["severity"] for rule in checks.rubric.rules}
    ratios = reference.patients.ratio(matrix) if closest else None  # (n,) DCR / near-copy threshold
    lines = []
    for i in range(len(matrix)):
        lines.append([
            _invalid_line(int(found["n_invalid"][i]), found["invalid_columns"][i], labels),
            f"Outside the reference range: {int(found['n_unusual'][i]) or 'none'}",
            _rules_line(found["rule_violations"][i], severity),
            _codes_line(list(checks.groups), counts[i], scores[i]),
            *([] if ratios is None else [_closest_line(float(ratios[i]), reference.patients.threshold_)]),
        ])
    return lines


def _closest_line(ratio: float, threshold: float) -> str:
    """DCR / DCR_q in words: identical, closer than the near-copy distance, or how many times further."""
    if ratio * threshold <= EXACT_COPY:
        return "Closest reference patient: identical (a copy)"
    if ratio < 1.0:
        return f"Closest reference patient: {ratio:.2f} of the near-copy distance (a near copy)"
    return f"Closest reference patient: {min(ratio, 999.0):.{1 if ratio < 10 else 0}f} times the near-copy distance"


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
