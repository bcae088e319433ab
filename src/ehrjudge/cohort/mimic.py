"""MIMIC-IV (demo 2.2, full 2.x/3.x; v1.0's core/ folder too) -> normalized event tables, out-of-core in DuckDB.

Tables are looked up as NAME.csv.gz or NAME.csv under hosp/, core/, then the folder itself. Read:
    patients        subject_id, gender (M/F), anchor_age, dod        -> gender, age = anchor_age, is_dead = dod set
    admissions      subject_id, admittime, dischtime [, deathtime]   -> length of stay (days); deathtime -> is_dead
    diagnoses_icd   subject_id, icd_code, icd_version                -> code "ICD<version>:<icd_code>"
    procedures_icd  subject_id, icd_code, icd_version
    prescriptions   subject_id, drug, dose_val_rx                    -> code = drug name, value = numeric dose
    labevents       subject_id, itemid, valuenum                     -> code = itemid, value = valuenum
    d_icd_diagnoses, d_icd_procedures (long_title), d_labitems ("label, fluid"): descriptions, when present.
    icu/icustays    subject_id, intime, outtime (optional)      -> ICU stays: icustays_count, icustays_los_*
"""

from __future__ import annotations

import logging
from pathlib import Path

from ehrjudge.cohort.featurize import Origins
from ehrjudge.cohort.tables import execute_located, find_file, line_of, read_csv_sql, require_columns
from ehrjudge.errors import InputError

log = logging.getLogger(__name__)

REQUIRED = {
    "patients": ["subject_id", "gender", "anchor_age", "dod"],
    "admissions": ["subject_id", "admittime", "dischtime"],
    "diagnoses_icd": ["subject_id", "icd_code", "icd_version"],
    "procedures_icd": ["subject_id", "icd_code", "icd_version"],
    "prescriptions": ["subject_id", "drug", "dose_val_rx"],
    "labevents": ["subject_id", "itemid", "valuenum"],
}
EVENT_FILES = {"admissions": "admissions", "diagnoses": "diagnoses_icd", "procedures": "procedures_icd",
               "prescriptions": "prescriptions", "labs": "labevents"}  # normalized table -> MIMIC table
DICTIONARIES = {
    "d_icd_diagnoses": ["icd_code", "icd_version", "long_title"],
    "d_icd_procedures": ["icd_code", "icd_version", "long_title"],
    "d_labitems": ["itemid", "label"],
}


def locate(root: Path, name: str, required: bool = True) -> Path | None:
    for folder in (root / "hosp", root / "core", root):
        if folder.is_dir():
            found = find_file(folder, name, required=False)
            if found is not None:
                return found
    if required:
        raise InputError(f"required MIMIC-IV table {name!r} not found under hosp/, core/ or the folder itself "
                         f"(as {name}.csv or {name}.csv.gz)", file=root)
    return None


def load_mimic(con, root: Path, patients: int | None = None) -> tuple[Origins, list[Path]]:
    """Fill the normalized tables from a MIMIC-IV folder; returns origins and the files read."""
    root = Path(root)
    if not root.is_dir():
        raise InputError("MIMIC-IV path must be a folder", file=root)
    files = {name: locate(root, name) for name in REQUIRED}
    columns = {name: require_columns(con, files[name], needed) for name, needed in REQUIRED.items()}
    dicts = {name: locate(root, name, required=False) for name in DICTIONARIES}
    dicts = {name: f for name, f in dicts.items() if f is not None}
    for name, f in dicts.items():
        columns[name] = require_columns(con, f, DICTIONARIES[name])
    origins = Origins(files={
        "patients": (str(files["patients"]), "subject_id"), "patients_id": (str(files["patients"]), "subject_id"),
        "gender": (str(files["patients"]), "gender"), "age": (str(files["patients"]), "anchor_age"),
        "is_dead": (str(files["patients"]), "dod"), "admissions": (str(files["admissions"]), "dischtime"),
        "diagnoses_code": (str(files["diagnoses_icd"]), "icd_code"),
        "procedures_code": (str(files["procedures_icd"]), "icd_code"),
        "prescriptions": (str(files["prescriptions"]), "dose_val_rx"), "prescriptions_code": (
            str(files["prescriptions"]), "drug"),
        "labs": (str(files["labevents"]), "valuenum"), "labs_code": (str(files["labevents"]), "itemid"),
    })
    for table, name in EVENT_FILES.items():
        origins.files[f"{table}_id"] = (str(files[name]), "subject_id")
    _patients(con, files, columns, patients)
    _admissions(con, files["admissions"], columns["admissions"])
    for table, name in (("diagnoses", "diagnoses_icd"), ("procedures", "procedures_icd")):
        _icd_events(con, table, files[name])
    execute_located(con, f"""INSERT INTO prescriptions
        SELECT CAST(subject_id AS VARCHAR), drug, TRY_CAST(dose_val_rx AS DOUBLE)
        FROM {read_csv_sql(files['prescriptions'], {'subject_id': 'BIGINT'})} WHERE drug IS NOT NULL""",
                    files["prescriptions"])
    execute_located(con, f"""INSERT INTO labs
        SELECT CAST(subject_id AS VARCHAR), CAST(itemid AS VARCHAR), valuenum
        FROM {read_csv_sql(files['labevents'], {'subject_id': 'BIGINT', 'itemid': 'BIGINT', 'valuenum': 'DOUBLE'})}""",
                    files["labevents"])
    for table, name in EVENT_FILES.items():
        _check_integer_ids(con, table, files[name])
    _dictionaries(con, dicts, columns, origins)
    icu = find_file(root / "icu", "icustays", required=False) if (root / "icu").is_dir() else None
    if icu is not None:
        require_columns(con, icu, ["subject_id", "intime", "outtime"])
        execute_located(con, f"""INSERT INTO icustays
            SELECT CAST(subject_id AS VARCHAR), epoch(outtime - intime) / 86400.0
            FROM {read_csv_sql(icu, {'subject_id': 'BIGINT', 'intime': 'TIMESTAMP', 'outtime': 'TIMESTAMP'})}""", icu)
        _check_integer_ids(con, "icustays", icu)
        origins.files["icustays"] = (str(icu), "outtime")
        origins.files["icustays_id"] = (str(icu), "subject_id")
        origins.present.add("icu")
    return origins, list(files.values()) + list(dicts.values()) + ([icu] if icu else [])


def _check_integer_ids(con, table: str, file: Path) -> None:
    """MIMIC subject ids are integers: DuckDB reads an id column it only passes on as text, so check it here."""
    hit = con.execute(f"SELECT subject_id FROM {table} WHERE subject_id IS NOT NULL "
                      "AND TRY_CAST(subject_id AS BIGINT) IS NULL LIMIT 1").fetchall()
    if hit:
        raise InputError(f"unparsable bigint value {hit[0][0]!r}", file=file, column="subject_id",
                         row=line_of(file, "subject_id", lambda v: v == hit[0][0]))


def _patients(con, files: dict, columns: dict, patients: int | None) -> None:
    f = files["patients"]
    execute_located(con, f"""CREATE OR REPLACE TEMP TABLE raw_patients AS
        SELECT CAST(subject_id AS VARCHAR) AS subject_id, subject_id AS sort_id, gender, anchor_age, dod
        FROM {read_csv_sql(f, {'subject_id': 'BIGINT', 'anchor_age': 'DOUBLE', 'dod': 'DATE'})}""", f)
    con.execute("INSERT INTO source_patients SELECT subject_id FROM raw_patients")
    bad = con.execute("""SELECT subject_id, gender FROM raw_patients WHERE gender IS NULL OR gender NOT IN ('M', 'F')
        LIMIT 1""").fetchall()
    if bad:
        raise InputError(f"unknown gender code {bad[0][1]!r} (expected M or F)", file=f, column="gender",
                         row=f"subject_id={bad[0][0]}")
    has_death = "deathtime" in columns["admissions"]
    died = ""
    if has_death:
        died = f"""OR subject_id IN (SELECT CAST(subject_id AS VARCHAR) FROM
            {read_csv_sql(files['admissions'], {'subject_id': 'BIGINT', 'deathtime': 'TIMESTAMP'})}
            WHERE deathtime IS NOT NULL)"""
    limit = f"ORDER BY sort_id LIMIT {int(patients)}" if patients else ""
    execute_located(con, f"""INSERT INTO patients
        SELECT subject_id, CASE WHEN gender = 'M' THEN 1 ELSE 0 END, anchor_age,
               CASE WHEN dod IS NOT NULL {died} THEN 1 ELSE 0 END
        FROM (SELECT * FROM raw_patients {limit})""", files["admissions"])


def _admissions(con, file: Path, columns: list[str]) -> None:
    execute_located(con, f"""INSERT INTO admissions
        SELECT CAST(subject_id AS VARCHAR), epoch(dischtime - admittime) / 86400.0
        FROM {read_csv_sql(file, {'subject_id': 'BIGINT', 'admittime': 'TIMESTAMP', 'dischtime': 'TIMESTAMP'})}""",
                    file)


def _icd_events(con, table: str, file: Path) -> None:
    execute_located(con, f"""CREATE OR REPLACE TEMP TABLE raw_{table} AS
        SELECT CAST(subject_id AS VARCHAR) AS subject_id, trim(icd_code) AS icd_code, icd_version
        FROM {read_csv_sql(file, {'subject_id': 'BIGINT', 'icd_version': 'INTEGER'})}""", file)
    bad = con.execute(f"""SELECT subject_id, icd_code, icd_version FROM raw_{table}
        WHERE icd_code IS NULL OR icd_version IS NULL OR icd_version NOT IN (9, 10) LIMIT 1""").fetchall()
    if bad:
        subject, code, version = bad[0]
        column = "icd_code" if code is None else "icd_version"
        raise InputError(f"unknown ICD code/version ({code!r}, version {version!r})", file=file, column=column,
                         row=f"subject_id={subject}")
    con.execute(f"INSERT INTO {table} SELECT subject_id, 'ICD' || icd_version || ':' || icd_code FROM raw_{table}")
    con.execute(f"DROP TABLE raw_{table}")


def _dictionaries(con, dicts: dict, columns: dict, origins: Origins) -> None:
    for name, group in (("d_icd_diagnoses", "diagnoses"), ("d_icd_procedures", "procedures")):
        if name in dicts:
            execute_located(con, f"""INSERT INTO dictionary
                SELECT '{group}', 'ICD' || icd_version || ':' || trim(icd_code), long_title
                FROM {read_csv_sql(dicts[name], {'icd_version': 'INTEGER'})}""", dicts[name])
            origins.dictionaries[group] = dicts[name].name
    if "d_labitems" in dicts:
        fluid = "|| coalesce(', ' || fluid, '')" if "fluid" in columns["d_labitems"] else ""
        execute_located(con, f"""INSERT INTO dictionary
            SELECT 'labs', CAST(itemid AS VARCHAR), coalesce(label, CAST(itemid AS VARCHAR)) {fluid}
            FROM {read_csv_sql(dicts['d_labitems'], {'itemid': 'BIGINT'})}""", dicts["d_labitems"])
        origins.dictionaries["labs"] = dicts["d_labitems"].name
    log.info("MIMIC dictionaries: %s", ", ".join(sorted(dicts)) or "none")

