"""The one featurizer: normalized event tables in DuckDB -> one float64 vector per patient.

Columns, in this order (the original design, 3,333 columns on the MIMIC-IV demo):
    demographics   gender (1 = male), age (years), is_dead
    admissions     admissions_count, admissions_los_{mean,sum,max,min,std} (length of stay, days)
    icu            icustays_count, icustays_los_{...} (ICU stays; only when the source has them: MIMIC icu/)
    diagnoses      diagnoses_count, dx_<code> counts
    procedures     procedures_count, px_<code> counts
    prescriptions  prescriptions_count, prescriptions_{mean,sum,max,min,std} (numeric dose), rx_<drug> counts
    labs           labs_count, labs_{mean,sum,max,min,std} (numeric result), lab_<item> counts
Code columns per group: the `top_k` codes by number of patients having them, at least `min_patients`,
ordered by that prevalence (descending) then code. std is the sample std (ddof 1) and 0 for fewer than 2
values; a patient without events gets 0 everywhere. Re-applying an existing schema yields exactly its columns.
Only the final (patients x features) matrix leaves DuckDB.
"""

from __future__ import annotations

import dataclasses
import logging
import re

import numpy as np
import pandas as pd

from ehrjudge.cohort.config import FeatureConfig
from ehrjudge.cohort.schema import Cohort, FeatureSpec, Schema
from ehrjudge.cohort.tables import line_of
from ehrjudge.config import to_dict
from ehrjudge.errors import InputError
from ehrjudge.io import FLOAT32_MAX, check_finite, show

log = logging.getLogger(__name__)

STATS = ("mean", "sum", "max", "min", "std")
STAT_SQL = {"mean": "avg(v)", "sum": "sum(v)", "max": "max(v)", "min": "min(v)", "std": "stddev_samp(v)"}
# group -> (event table, value column or None, code-column prefix, what the value is)
GROUP_TABLES = {
    "admissions": ("admissions", "los_days", None, "length of stay in days"),
    "icu": ("icustays", "los_days", None, "ICU length of stay in days"),
    "diagnoses": ("diagnoses", None, "dx_", None),
    "procedures": ("procedures", None, "px_", None),
    "prescriptions": ("prescriptions", "value", "rx_", "numeric dose per prescription (units as recorded)"),
    "labs": ("labs", "value", "lab_", "numeric lab result (units as recorded)"),
}
DEMOGRAPHICS = [
    FeatureSpec("gender", "demographics", "binary", "Sex: 1 = male, 0 = female or other"),
    FeatureSpec("age", "demographics", "continuous", "Age in years"),
    FeatureSpec("is_dead", "demographics", "binary", "Died: 1 = yes, 0 = no"),
]
STAT_NAMES = {"admissions": "admissions_los", "icu": "icustays_los"}
COUNT_NAMES = {"icu": "icustays_count"}
OPTIONAL_GROUPS = {"icu"}  # columns only when the source has such data (MIMIC icu/icustays)


@dataclasses.dataclass
class Origins:
    """Where each normalized table came from, for error messages; which groups have a full dictionary."""

    files: dict[str, tuple[str, str]] = dataclasses.field(default_factory=dict)  # table -> (file, value column)
    dictionaries: dict[str, str] = dataclasses.field(default_factory=dict)  # group -> dictionary file
    present: set[str] = dataclasses.field(default_factory=set)  # optional groups the source has (e.g. icu)

    def file(self, table: str):
        return self.files.get(table, (None, None))[0]

    def column(self, table: str, default: str):
        return self.files.get(table, (None, None))[1] or default


def slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "_", str(text).lower()).strip("_") or "x"


def aggregate_features(group: str) -> list[FeatureSpec]:
    table, value, _, what = GROUP_TABLES[group]
    out = [FeatureSpec(COUNT_NAMES.get(group, f"{group}_count"), group, "count", f"Number of {table} records")]
    if value is not None:
        base = STAT_NAMES.get(group, group)
        out += [FeatureSpec(f"{base}_{s}", group, "continuous", f"{s} of {what} over the patient's {group}")
                for s in STATS]
    return out


def featurize(con, source: str, config: FeatureConfig | None = None, schema: Schema | None = None,
              origins: Origins | None = None) -> Cohort:
    """Vectors for every row of `patients`; `schema` (if given) fixes the columns exactly."""
    config = config or FeatureConfig()
    origins = origins or Origins()
    check_tables(con, origins, config)
    con.execute("""CREATE OR REPLACE TEMP TABLE pidx AS
        SELECT subject_id, (row_number() OVER (ORDER BY TRY_CAST(subject_id AS BIGINT) NULLS LAST, subject_id)) - 1
        AS idx FROM patients""")
    ids = [r[0] for r in con.execute("SELECT subject_id FROM pidx ORDER BY idx").fetchall()]
    n = len(ids)
    if schema is None:
        groups = [g for g in GROUP_TABLES if g not in OPTIONAL_GROUPS or g in origins.present]
        features = DEMOGRAPHICS + [f for group in groups for f in group_features(con, group, config)]
        schema = Schema(features=features, source=source, settings={"feature_config": to_dict(config)})
    else:
        check_reapplicable(schema)
    columns = {}
    demo = con.execute("SELECT gender, age, is_dead FROM patients JOIN pidx USING (subject_id) ORDER BY idx"
                       ).fetchnumpy()
    for name in ("gender", "age", "is_dead"):
        columns[name] = demo[name].astype(np.float64)
    for group in GROUP_TABLES:
        columns.update(aggregate_columns(con, group, n))
    code_specs = [f for f in schema.features if f.code is not None]
    columns.update(code_columns(con, code_specs, n))
    matrix = np.column_stack([columns[f.name] for f in schema.features]) if schema.features else np.zeros((n, 0))
    vectors = pd.concat([pd.DataFrame({"subject_id": ids}),
                         pd.DataFrame(matrix, columns=schema.names, dtype=np.float64)], axis=1)
    check_finite(vectors, schema.names)  # sums of in-range values can still leave the float32 range
    log.info("featurized %d patients x %d features (source %s)", n, len(schema.features), source)
    return Cohort(vectors=vectors, schema=Schema(features=list(schema.features), source=source,
                                                 settings=dict(schema.settings)))


def check_tables(con, origins: Origins, config: FeatureConfig) -> None:
    """Empty cohort, duplicate/missing ids, missing demographics, NaN/inf values, unknown codes."""
    n = con.execute("SELECT count(*) FROM patients").fetchone()[0]
    if n == 0:
        raise InputError("empty cohort: no patients", file=origins.file("patients"))
    bad = con.execute("SELECT subject_id FROM patients WHERE subject_id IS NULL LIMIT 1").fetchall()
    if bad:
        raise InputError("patient without an id", file=origins.file("patients"),
                         column=origins.column("patients_id", "subject_id"))
    dup = con.execute("SELECT subject_id FROM patients GROUP BY 1 HAVING count(*) > 1 LIMIT 1").fetchall()
    if dup:
        raise InputError(f"duplicate patient id {dup[0][0]!r}", file=origins.file("patients"),
                         column=origins.column("patients_id", "subject_id"))
    for column in ("gender", "age", "is_dead"):
        hit = con.execute(f"SELECT subject_id, {column} FROM patients WHERE {column} IS NULL "
                          f"OR NOT isfinite({column}) OR abs({column}) > {FLOAT32_MAX!r} LIMIT 1").fetchall()
        if hit:
            problem = "missing" if hit[0][1] is None else f"{show(hit[0][1])}, not a finite number in float32 range"
            raise InputError(f"{column} is {problem} for patient {hit[0][0]!r}", file=origins.file(column),
                             column=origins.column(column, column), row=f"subject_id={hit[0][0]}")
    for table, value in VALUE_COLUMNS:
        hit = con.execute(f"SELECT subject_id, {value} FROM {table} WHERE {value} IS NOT NULL "
                          f"AND (NOT isfinite({value}) OR abs({value}) > {FLOAT32_MAX!r}) LIMIT 1").fetchall()
        if hit:
            raise InputError(f"value {show(hit[0][1])} is not a finite number in float32 range",
                             file=origins.file(table), column=origins.column(table, value),
                             row=f"subject_id={hit[0][0]}")
    check_links(con, origins, config.strict)
    check_signs(con, origins, config.strict)
    if not config.strict_codes:
        return
    for group, dict_file in origins.dictionaries.items():
        table = GROUP_TABLES[group][0]
        hit = con.execute(f"""SELECT subject_id, code FROM {table} t WHERE t.code IS NOT NULL AND NOT EXISTS
            (SELECT 1 FROM dictionary d WHERE d."group" = '{group}' AND d.code = t.code) LIMIT 1""").fetchall()
        if hit:
            raise InputError(f"unknown code {hit[0][1]!r} (not in {dict_file}; set strict_codes false to allow)",
                             file=origins.file(table + "_code") or origins.file(table),
                             column=origins.column(table + "_code", "code"),
                             row=f"subject_id={hit[0][0]}")


EVENT_TABLES = ("admissions", "icustays", "diagnoses", "procedures", "prescriptions", "labs")
VALUE_COLUMNS = (("admissions", "los_days"), ("icustays", "los_days"), ("prescriptions", "value"), ("labs", "value"))


def _id_origin(origins: Origins, table: str) -> tuple:
    """(file, id column) an event table's patient ids came from."""
    return (origins.file(table + "_id") or origins.file(table), origins.column(table + "_id", "subject_id"))


def check_links(con, origins: Origins, strict: bool) -> None:
    """Every event row belongs to a patient of the source: missing ids are errors; orphan ids are errors when
    `strict`, else counted in a warning (they never reach a vector)."""
    known = "source_patients" if con.execute("SELECT count(*) FROM source_patients").fetchone()[0] else "patients"
    patients_file = origins.file("patients")
    for table in EVENT_TABLES:
        file, column = _id_origin(origins, table)
        if con.execute(f"SELECT count(*) FROM {table} WHERE subject_id IS NULL OR trim(subject_id) = ''"
                       ).fetchone()[0]:
            raise InputError(f"{table} row without a patient id", file=file, column=column,
                             row=line_of(file, column, lambda v: v == ""))
        count, example = con.execute(f"""SELECT count(*), min(subject_id) FROM {table} t
            WHERE NOT EXISTS (SELECT 1 FROM {known} k WHERE k.subject_id = t.subject_id)""").fetchone()
        if not count:
            continue
        message = (f"{count} {table} row(s) of patient ids missing from the patients"
                   f"{f' ({patients_file})' if patients_file else ''}, e.g. {example!r}")
        if strict:
            raise InputError(message + "; set strict false to leave them out", file=file, column=column,
                             row=line_of(file, column, lambda v: v == example) or f"subject_id={example}")
        log.warning("%s (%s): left out (strict false)", message, file)


def check_signs(con, origins: Origins, strict: bool) -> None:
    """Negative lengths of stay (a discharge before the admission) and negative ages: errors when `strict`,
    else counted in a warning; the stay keeps counting without a length, the patient is left out."""
    for table in ("admissions", "icustays"):
        count, example = con.execute(f"SELECT count(*), min(subject_id) FROM {table} WHERE los_days < 0"
                                     ).fetchone()
        if not count:
            continue
        message = f"{count} {table} row(s) end before they start (negative length of stay)"
        if strict:
            raise InputError(message + "; set strict false to count them without a length",
                             file=origins.file(table), column=origins.column(table, "los_days"),
                             row=f"subject_id={example}")
        log.warning("%s (%s): their length of stay is left out (strict false)", message, origins.file(table))
        con.execute(f"UPDATE {table} SET los_days = NULL WHERE los_days < 0")
    count, example = con.execute("SELECT count(*), min(subject_id) FROM patients WHERE age < 0").fetchone()
    if count:
        message = f"{count} patient(s) with a negative age"
        if strict:
            raise InputError(message + "; set strict false to leave them out", file=origins.file("age"),
                             column=origins.column("age", "age"), row=f"subject_id={example}")
        log.warning("%s (%s): left out of the cohort (strict false)", message, origins.file("age"))
        con.execute("DELETE FROM patients WHERE age < 0")
        if not con.execute("SELECT count(*) FROM patients").fetchone()[0]:
            raise InputError("empty cohort: every patient has a negative age", file=origins.file("age"))


def group_features(con, group: str, config: FeatureConfig) -> list[FeatureSpec]:
    features = aggregate_features(group)
    table, _, prefix, _ = GROUP_TABLES[group]
    if prefix is None or config.top_k(group) <= 0:
        return features
    rows = con.execute(f"""
        SELECT t.code, count(DISTINCT t.subject_id) AS n_patients, any_value(d.description) AS description
        FROM {table} t JOIN pidx USING (subject_id)
        LEFT JOIN (SELECT code, min(description) AS description FROM dictionary WHERE "group" = '{group}'
                   GROUP BY code) d ON d.code = t.code
        WHERE t.code IS NOT NULL
        GROUP BY t.code HAVING count(DISTINCT t.subject_id) >= {int(config.min_patients)}
        ORDER BY n_patients DESC, t.code LIMIT {int(config.top_k(group))}""").fetchall()
    used = set()
    for code, _, description in rows:
        name = prefix + slug(code)
        k = 2
        while name in used:
            name, k = f"{prefix}{slug(code)}_{k}", k + 1
        used.add(name)
        features.append(FeatureSpec(name, group, "count", description or str(code), code=str(code)))
    return features


def check_reapplicable(schema: Schema) -> None:
    """A schema can be re-applied only if each feature is one this featurizer computes."""
    known = {f.name for f in DEMOGRAPHICS} | {f.name for g in GROUP_TABLES for f in aggregate_features(g)}
    for f in schema.features:
        if f.code is None and f.name not in known:
            raise InputError(f"schema mismatch: feature {f.name!r} is not computed by the featurizer",
                             column=f.name)
        if f.code is not None and (f.group not in GROUP_TABLES or GROUP_TABLES[f.group][2] is None):
            raise InputError(f"schema mismatch: code feature {f.name!r} has group {f.group!r}", column=f.name)


def aggregate_columns(con, group: str, n: int) -> dict[str, np.ndarray]:
    table, value, _, _ = GROUP_TABLES[group]
    stats = ""
    if value is not None:
        stats = ", " + ", ".join(f"{STAT_SQL[s].replace('(v)', f'({value})')} AS {s}" for s in STATS)
    got = con.execute(f"SELECT idx, count(*) AS count {stats} FROM {table} JOIN pidx USING (subject_id) "
                      "GROUP BY idx").fetchnumpy()
    idx = np.asarray(got["idx"], dtype=np.int64)
    out = {COUNT_NAMES.get(group, f"{group}_count"): _scatter(idx, got["count"], n)}
    if value is not None:
        base = STAT_NAMES.get(group, group)
        for s in STATS:
            out[f"{base}_{s}"] = _scatter(idx, got[s], n)
    return out


def _scatter(idx: np.ndarray, values, n: int) -> np.ndarray:
    column = np.zeros(n, dtype=np.float64)
    values = np.ma.filled(np.ma.asarray(values).astype(np.float64), 0.0)  # NULL (no numeric value) -> 0
    column[idx] = np.nan_to_num(values, nan=0.0)
    return column


def code_columns(con, specs: list[FeatureSpec], n: int) -> dict[str, np.ndarray]:
    out = {f.name: np.zeros(n, dtype=np.float64) for f in specs}
    for group, (table, _, prefix, _) in GROUP_TABLES.items():
        wanted = [f for f in specs if f.group == group]
        if not wanted or prefix is None:
            continue
        selected = pd.DataFrame({"code": [f.code for f in wanted], "col": np.arange(len(wanted), dtype=np.int64)})
        con.register("selected_codes", selected)
        got = con.execute(f"""SELECT idx, col, count(*) AS n FROM {table} JOIN pidx USING (subject_id)
            JOIN selected_codes USING (code) GROUP BY idx, col""").fetchnumpy()
        con.unregister("selected_codes")
        block = np.zeros((n, len(wanted)), dtype=np.float64)  # (patients, codes of this group)
        block[np.asarray(got["idx"], dtype=np.int64), np.asarray(got["col"], dtype=np.int64)] = got["n"]
        for j, f in enumerate(wanted):
            out[f.name] = block[:, j]
    return out
