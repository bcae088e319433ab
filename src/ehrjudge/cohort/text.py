"""One patient vector -> the judge's table text, in two formats, with a deterministic token budget.

fmt="csv": the original's table, a header `SubjectID,Gender,Age,IsDead,Admissions_count,...` (every schema
    column, in schema order) and one value line.
fmt="compact": only non-zero features, readable names, one line per table:
    Demographics: male, age 67, alive
    Admissions: 2 (length of stay mean 3.5 d, sum 7 d, max 6 d, min 1 d, std 3.54 d)
    Diagnoses: 3 - Essential hypertension (I10) x2; Type 2 diabetes mellitus (E119) x1
fmt="deviations": the record as seen against the reference cohort (needs `reference`, a ReferenceStats):
    Demographics: male, age 67, alive
    Against the reference cohort: 2 values beyond 3 SD, 4 beyond 2 SD, 1 never seen there
    Labs value max 412 (z +9.3)
    Essential hypertension (I10) count 7 (z +4.1)
    ...
    the `top` features with the largest |z| (most unusual first; "never in reference" before any number),
    like the H/L flags of a lab report. z is the scorer's own standardization (ehrjudge.cohort.reference_stats).
    Truncation drops the least unusual item first; demographics and the count line stay.
fmt="findings": the deviations text with fixed check lines after the count line (`findings`, made by
    judge/findings.py from the hardened score's record checks: invalid values, values outside the reference range,
    clinical rules broken, codes per table); truncation drops deviation items only.
fmt="findings_dcr": findings plus one line on the closest reference patient (the hardened score's privacy input,
    which needs the patients at judging time).
Truncation (when max_tokens and count_tokens are given), dropping one unit at a time until the text fits:
    1. code items (compact) / code columns (csv), by ascending |value|, then name: least informative first;
    2. a table's summary statistics (its mean/sum/max/min/std), tables from last (labs) to first;
    3. a table's whole line / count column, tables from last to first.
Demographics are never dropped, so a budget smaller than that line cannot be met. A marker line such as
"(+12 more codes; 2 summaries omitted; 1 tables omitted)" says what was left out.
Values: integers without decimals; otherwise 3 decimals when |v| >= 1, else 3 significant digits.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping

import numpy as np

from ehrjudge.cohort.featurize import STATS
from ehrjudge.cohort.reference_stats import ReferenceStats
from ehrjudge.cohort.schema import FeatureSpec, Schema
from ehrjudge.errors import InputError

FINDINGS_FORMATS = ("findings", "findings_dcr")  # the deviations text with check lines (judge/findings.py)
STAT_UNITS = {"admissions": " d", "icu": " d"}
STAT_LABEL = {"admissions": "length of stay", "icu": "length of stay", "prescriptions": "dose", "labs": "value"}
GROUP_LABEL = {"icu": "ICU stays"}


def format_value(value: float) -> str:
    value = float(value)
    if not math.isfinite(value):
        raise InputError(f"value {value!r} is not a finite number")
    if value == int(value) and abs(value) < 1e15:
        return str(int(value))
    text = f"{value:.3f}" if abs(value) >= 1 else f"{value:.3g}"
    if "e" not in text and "." in text:
        text = text.rstrip("0").rstrip(".")
    return "0" if text in ("-0", "") else text


def csv_name(name: str, group: str) -> str:
    """gender -> Gender, is_dead -> IsDead, prescriptions_mean -> Prescriptions_mean."""
    if group == "demographics":
        return "".join(part.capitalize() for part in name.split("_"))
    return name[:1].upper() + name[1:]


def record_to_text(record: Mapping[str, float], schema: Schema, fmt: str = "compact", max_tokens: int | None = None,
                   count_tokens: Callable[[str], int] | None = None, record_id=None,
                   reference: ReferenceStats | None = None, top: int = 6, findings: list[str] | None = None) -> str:
    """Text of one record (a mapping holding every schema feature); see the module docstring for formats."""
    missing = [f.name for f in schema.features if f.name not in record]
    if missing:
        raise InputError(f"record lacks {len(missing)} schema feature(s), e.g. {missing[:5]}", column=missing[0])
    values = {f.name: float(record[f.name]) for f in schema.features}
    for name, value in values.items():
        if not math.isfinite(value):
            raise InputError(f"value {value!r} is not a finite number", column=name, row=record_id)
    if fmt == "csv":
        units, render = _csv_units(schema, values, record_id)
    elif fmt == "compact":
        units, render = _compact_units(schema, values)
    elif fmt in ("deviations", *FINDINGS_FORMATS):
        if reference is None:
            raise InputError(f"record format '{fmt}' needs the reference cohort's statistics (reference=)")
        if (fmt in FINDINGS_FORMATS) != (findings is not None):
            raise InputError("record formats 'findings' and 'findings_dcr' and only they take the check lines "
                             "(findings=)")
        reference.check_schema(schema)
        units, render = _deviation_units(schema, values, reference.z_scores(values), top, findings or [])
    else:
        raise InputError(f"unknown text format {fmt!r}; choose compact, csv, deviations, findings or findings_dcr")
    if max_tokens is None or count_tokens is None:
        return render(0)
    return _fit(units, render, max_tokens, count_tokens)


def _fit(units: int, render: Callable[[int], str], max_tokens: int, count_tokens) -> str:
    """Smallest number of dropped units whose text fits (binary search, then a forward check)."""
    if count_tokens(render(0)) <= max_tokens:
        return render(0)
    low, high = 1, units
    while low < high:
        mid = (low + high) // 2
        if count_tokens(render(mid)) <= max_tokens:
            high = mid
        else:
            low = mid + 1
    return render(low)


def _marker(codes: int, summaries: int, tables: int) -> str:
    parts = []
    if codes:
        parts.append(f"+{codes} more codes")
    if summaries:
        parts.append(f"{summaries} summaries omitted")
    if tables:
        parts.append(f"{tables} tables omitted")
    return f"({'; '.join(parts)})" if parts else ""


def _code_priority(features: list[FeatureSpec], values: dict) -> list[FeatureSpec]:
    return sorted(features, key=lambda f: (abs(values[f.name]), f.name))


def _csv_units(schema: Schema, values: dict, record_id):
    codes = _code_priority([f for f in schema.features if f.code is not None], values)
    groups = [g for g in _groups(schema) if g != "demographics"][::-1]
    stats = [[f for f in schema.features if f.group == g and f.code is None and not f.name.endswith("_count")]
             for g in groups]
    counts = [[f for f in schema.features if f.group == g and f.code is None and f.name.endswith("_count")]
              for g in groups]
    order = [[f] for f in codes] + [s for s in stats if s] + [c for c in counts if c]

    def render(k: int) -> str:
        dropped = {f.name for unit in order[:k] for f in unit}
        kept = [f for f in schema.features if f.name not in dropped]
        header = ",".join(["SubjectID"] + [csv_name(f.name, f.group) for f in kept])
        row = ",".join(["-" if record_id is None else str(record_id)] + [format_value(values[f.name]) for f in kept])
        marker = f"(+{len(dropped)} more columns)" if dropped else ""
        return "\n".join(line for line in (header, row, marker) if line)

    return len(order), render


def _groups(schema: Schema) -> list[str]:
    """Tables in the order they first appear in the schema."""
    return list(dict.fromkeys(f.group for f in schema.features))


def _compact_units(schema: Schema, values: dict):
    groups = [g for g in _groups(schema) if g != "demographics"]
    present = [f for f in schema.features if values[f.name] != 0]
    codes = _code_priority([f for f in present if f.code is not None], values)
    with_stats = [g for g in groups[::-1] if any(f.group == g and f.code is None and not f.name.endswith("_count")
                                                 for f in present)]
    with_line = [g for g in groups[::-1] if any(f.group == g for f in present)]
    order = [("code", f.name) for f in codes] + [("stats", g) for g in with_stats] + [("line", g) for g in with_line]
    demo = _demographics(schema, values)

    def render(k: int) -> str:
        dropped = order[:k]
        gone_codes = {name for kind, name in dropped if kind == "code"}
        gone_stats = {g for kind, g in dropped if kind == "stats"}
        gone_lines = {g for kind, g in dropped if kind == "line"}
        lines = [demo] if demo else []
        for g in groups:
            if g in gone_lines:
                continue
            line = _group_line(g, [f for f in present if f.group == g and f.name not in gone_codes], values,
                               show_stats=g not in gone_stats)
            if line:
                lines.append(line)
        hidden_codes = len(gone_codes) + sum(1 for f in codes if f.group in gone_lines and f.name not in gone_codes)
        marker = _marker(hidden_codes, len(gone_stats), len(gone_lines))
        return "\n".join(lines + ([marker] if marker else []))

    return len(order), render


def _demographics(schema: Schema, values: dict) -> str:
    names = {f.name for f in schema.features}
    parts = []
    if "gender" in names:
        parts.append({1.0: "male", 0.0: "female"}.get(values["gender"], f"gender {format_value(values['gender'])}"))
    if "age" in names:
        parts.append(f"age {format_value(values['age'])}")
    if "is_dead" in names:
        parts.append({1.0: "died", 0.0: "alive"}.get(values["is_dead"], f"is_dead {format_value(values['is_dead'])}"))
    for f in schema.features:
        if f.group == "demographics" and f.name not in ("gender", "age", "is_dead") and values[f.name] != 0:
            parts.append(f"{f.description or f.name} {format_value(values[f.name])}")
    return f"Demographics: {', '.join(parts)}" if parts else ""


def _code_label(f: FeatureSpec) -> str:
    code = str(f.code).split(":", 1)[-1]
    description = f.description or code
    return description if description == code or description == f.code else f"{description} ({code})"


def _group_line(group: str, features: list[FeatureSpec], values: dict, show_stats: bool) -> str:
    count = next((f for f in features if f.code is None and f.name.endswith("_count")), None)
    stats = [f for f in features if f.code is None and f is not count]
    codes = sorted((f for f in features if f.code is not None), key=lambda f: (-values[f.name], _code_label(f)))
    if count is None and not stats and not codes:
        return ""
    head = format_value(values[count.name]) if count is not None else ""
    unit = STAT_UNITS.get(group, "")
    if stats and show_stats:
        label = STAT_LABEL.get(group, "")
        parts = []
        for f in stats:
            stat = next((s for s in STATS if f.name.endswith("_" + s)), f.name)
            parts.append(f"{stat} {format_value(values[f.name])}{unit}")
        head = f"{head} ({label + ' ' if label else ''}{', '.join(parts)})".strip()
    line = f"{GROUP_LABEL.get(group, group.capitalize())}: {head}".rstrip()
    if codes:
        items = "; ".join(f"{_code_label(f)} x{format_value(values[f.name])}" for f in codes)
        line = f"{line} - {items}" if head else f"{line} {items}"
    return line


def feature_label(f: FeatureSpec) -> str:
    """A readable name of one column: "age", "Admissions count", "Labs value max", "Asthma (J45) count"."""
    if f.group == "demographics":
        return {"gender": "sex", "is_dead": "status", "age": "age"}.get(f.name, f.description or f.name)
    group = GROUP_LABEL.get(f.group, f.group.capitalize())
    if f.code is not None:
        return f"{_code_label(f)} count"
    if f.name.endswith("_count"):
        return f"{group} count"
    stat = next((s for s in STATS if f.name.endswith("_" + s)), f.name)
    label = STAT_LABEL.get(f.group, "")
    return f"{group} {label + ' ' if label else ''}{stat}"


def _feature_value(f: FeatureSpec, value: float) -> str:
    if f.name == "gender":
        return {1.0: "male", 0.0: "female"}.get(value, format_value(value))
    if f.name == "is_dead":
        return {1.0: "died", 0.0: "alive"}.get(value, format_value(value))
    unit = STAT_UNITS.get(f.group, "") if (f.code is None and not f.name.endswith("_count")) else ""
    return f"{format_value(value)}{unit}"


def format_z(z: float) -> str:
    """+1.2, -0.4, +12, >+999; never-seen values are spelled out by the caller."""
    if abs(z) >= 999.5:
        return ">+999" if z > 0 else "<-999"
    return f"{z:+.1f}" if abs(z) < 9.95 else f"{z:+.0f}"


def _deviation_units(schema: Schema, values: dict, z: dict, top: int, fixed: list[str]):
    """Units = the shown items, dropped from the least unusual one; `fixed` lines follow the count line, kept."""
    rank = sorted(range(len(schema.features)), key=lambda j: (-abs(z[schema.features[j].name]), j))
    shown = [schema.features[j] for j in rank[:max(top, 0)]]
    never = sum(1 for v in z.values() if np.isinf(v))
    beyond3 = sum(1 for v in z.values() if np.isfinite(v) and abs(v) > 3)
    beyond2 = sum(1 for v in z.values() if np.isfinite(v) and abs(v) > 2)
    summary = (f"Against the reference cohort: {beyond3} values beyond 3 SD, {beyond2} beyond 2 SD"
               + (f", {never} never seen there" if never else ""))
    demo = _demographics(schema, values)

    def item(f: FeatureSpec) -> str:
        value = z[f.name]
        flag = "never in reference" if np.isinf(value) else f"z {format_z(value)}"
        return f"{feature_label(f)} {_feature_value(f, values[f.name])} ({flag})"

    def render(k: int) -> str:
        lines = ([demo] if demo else []) + [summary] + fixed + [item(f) for f in shown[:len(shown) - k]]
        return "\n".join(lines)

    return len(shown), render
