"""The `findings` record text's check lines: what the hardened score's record checks found, in words.

    Invalid values: 2 (Admissions count, Labs value min)          hard validity violations (caps the score at 2)
    Outside the reference range: 1                                soft ones (unusual values)
    Rules broken: 1 essential (male with pregnancy code), 4 important   the clinical rubric (essential caps at 4)
    Codes per table: diagnoses 3, labs 4, prescriptions 12 (z +3.1), procedures 0

The checks are scoring/hardened/checks.py's, built from the judge's reference statistics (marginal facts only), so a
judge shows exactly what the verifiable score checks, and a judge folder holds no patient. What they cannot show is
whether a record copies a patient: that needs the patients (the privacy cap stays in the verifiable score).
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

SEVERITY_ORDER = ("essential", "important", "optional")  # scoring/rules.yaml's classes
SHOW_SPARSITY_Z = 2.0  # a table's codes-per-patient normal score is printed beyond this |z|


def finding_lines(records: pd.DataFrame, schema: Schema, reference: ReferenceStats | None) -> list[list[str]]:
    """Per row of `records` (schema columns, finite), its check lines."""
    if reference is None:
        raise InputError("record format 'findings' needs the reference cohort's statistics (reference=)")
    missing = [name for name in schema.names if name not in records.columns]
    if missing:
        raise InputError(f"records lack {len(missing)} schema feature(s), e.g. {missing[:5]}", column=missing[0])
    check_finite(records, schema.names)
    matrix = records[schema.names].to_numpy(dtype=np.float64)  # (n, p)
    checks = RecordChecks(ScoreConfig(), schema, reference)
    found, counts, scores = checks.check_with_counts(matrix)  # counts, scores: (n, tables)
    labels = {f.name: feature_label(f) for f in schema.features}
    severity = {rule["id"]: rule["severity"] for rule in checks.rubric.rules}
    lines = []
    for i in range(len(matrix)):
        lines.append([
            _invalid_line(int(found["n_invalid"][i]), found["invalid_columns"][i], labels),
            f"Outside the reference range: {int(found['n_unusual'][i]) or 'none'}",
            _rules_line(found["rule_violations"][i], severity),
            _codes_line(list(checks.groups), counts[i], scores[i]),
        ])
    return lines


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
