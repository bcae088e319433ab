"""DuckDB plumbing shared by the loaders: connections, located CSV reads, the normalized event tables.

Every source is loaded into the same normalized tables (created by `create_event_tables`):
    patients(subject_id, gender, age, is_dead)    gender 1 = male, 0 = otherwise; is_dead 0/1
    admissions(subject_id, los_days)              one row per admission/encounter; los_days may be NULL
    icustays(subject_id, los_days)                ICU stays (MIMIC icu/icustays only)
    diagnoses(subject_id, code)                   one row per coded diagnosis
    procedures(subject_id, code)
    prescriptions(subject_id, code, value)        code = drug name; value = numeric dose (may be NULL)
    labs(subject_id, code, value)                 code = lab item; value = numeric result (may be NULL)
    dictionary("group", code, description)        readable names for codes (optional rows)
`origins` (table -> (file, column of the value)) lets the featurizer name the file a bad value came from.
"""

from __future__ import annotations

import csv
import gzip
import re
from pathlib import Path

import duckdb

from ehrjudge.errors import InputError

# The dialect is fixed, not sniffed: a malformed row must fail with its line, not change the detected dialect.
CSV_DIALECT = "header = true, delim = ',', quote = '\"', escape = '\"', strict_mode = true"
EVENT_TABLES = {
    "patients": "subject_id VARCHAR, gender DOUBLE, age DOUBLE, is_dead DOUBLE",
    "admissions": "subject_id VARCHAR, los_days DOUBLE",
    "icustays": "subject_id VARCHAR, los_days DOUBLE",
    "diagnoses": "subject_id VARCHAR, code VARCHAR",
    "procedures": "subject_id VARCHAR, code VARCHAR",
    "prescriptions": "subject_id VARCHAR, code VARCHAR, value DOUBLE",
    "labs": "subject_id VARCHAR, code VARCHAR, value DOUBLE",
    "dictionary": '"group" VARCHAR, code VARCHAR, description VARCHAR',
}


def connect(threads: int | None = None, memory_limit: str | None = None, temp_directory: Path | None = None):
    """An in-memory DuckDB connection that spills to `temp_directory` beyond `memory_limit`."""
    con = duckdb.connect(":memory:")
    if threads:
        con.execute(f"SET threads = {int(threads)}")
    if memory_limit:
        con.execute(f"SET memory_limit = '{memory_limit}'")
    if temp_directory is not None:
        con.execute(f"SET temp_directory = '{Path(temp_directory).as_posix()}'")
    con.execute("SET preserve_insertion_order = false")
    con.execute("SET enable_progress_bar = false")  # DuckDB would draw on stdout; progress is logged instead
    return con


def create_event_tables(con) -> None:
    for name, columns in EVENT_TABLES.items():
        con.execute(f"CREATE OR REPLACE TABLE {name} ({columns})")


def sql_str(value) -> str:
    return "'" + str(value).replace("'", "''") + "'"


def find_file(folder: Path, name: str, required: bool = True) -> Path | None:
    """`folder/name.csv` or `folder/name.csv.gz`; missing and required -> InputError."""
    for suffix in (".csv.gz", ".csv"):
        candidate = folder / f"{name}{suffix}"
        if candidate.exists():
            return candidate
    if required:
        raise InputError(f"required table {name!r} not found (looked for {name}.csv and {name}.csv.gz)",
                         file=folder)
    return None


def csv_columns(con, file: Path) -> list[str]:
    """The header of a CSV or CSV.gz file (read directly: a sniffer would trip on the malformed rows we report)."""
    opener = gzip.open if str(file).endswith(".gz") else open
    try:
        with opener(file, "rt", encoding="utf-8", newline="") as handle:
            header = next(csv.reader(handle), None)
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise InputError(f"cannot read CSV header: {exc}", file=file) from exc
    if not header:
        raise InputError("empty CSV file (no header line)", file=file)
    return [c.strip() for c in header]


def require_columns(con, file: Path, needed) -> list[str]:
    have = csv_columns(con, file)
    for column in needed:
        if column not in have:
            raise InputError(f"required column missing (file has {have[:12]})", file=file, column=column)
    return have


def read_csv_sql(file: Path, types: dict[str, str]) -> str:
    """A read_csv(...) table expression: fixed dialect, `types` for the listed columns, VARCHAR for the rest."""
    columns = ", ".join(f"{sql_str(c)}: {sql_str(types.get(c, 'VARCHAR'))}" for c in csv_columns(None, file))
    return (f"read_csv({sql_str(file)}, {CSV_DIALECT}, auto_detect = false, columns = {{{columns}}}, "
            "nullstr = ['', 'NA', 'NULL', 'null'])")


def first_line(exc: Exception) -> str:
    return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__


def located(exc: duckdb.Error, file: Path) -> InputError:
    """Turn a DuckDB CSV conversion/shape error into an InputError naming file, column and line."""
    text = str(exc)
    line = re.search(r"on Line:\s*(\d+)", text)
    column = re.search(r'converting column "([^"]+)"', text)
    original = re.search(r"Original Line:\s*(.*)", text)
    message = first_line(exc)
    if "Could not convert" in text:
        detail = re.search(r"Could not convert string (.*?) to '([A-Z]+)'", text)
        if detail:
            kind = "date/time" if detail.group(2) in ("TIMESTAMP", "DATE") else detail.group(2).lower()
            message = f"unparsable {kind} value {detail.group(1)}"
    elif original:
        message = f"malformed row ({message}): {original.group(1)[:120]!r}"
    return InputError(message, file=file, column=column.group(1) if column else None,
                      row=f"line {line.group(1)}" if line else None)


def execute_located(con, sql: str, file: Path) -> None:
    try:
        con.execute(sql)
    except (duckdb.ConversionException, duckdb.InvalidInputException) as exc:
        raise located(exc, file) from exc
