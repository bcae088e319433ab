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
    source_patients(subject_id)                   every patient id of the source, before a `patients` cap
                                                  (events of ids outside it are orphan rows)
`origins` (table -> (file, column of the value)) lets the featurizer name the file a bad value came from.
"""

from __future__ import annotations

import csv
import re
import zlib
from pathlib import Path

import duckdb

from ehrjudge.errors import InputError
from ehrjudge.io import first_line, open_binary, undecodable_line

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
    "source_patients": "subject_id VARCHAR",
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
    """`folder/name.csv` or `folder/name.csv.gz`; both present -> InputError (which one is meant?)."""
    found = [folder / f"{name}{suffix}" for suffix in (".csv.gz", ".csv") if (folder / f"{name}{suffix}").exists()]
    if len(found) > 1:
        raise InputError(f"both {name}.csv and {name}.csv.gz exist; keep one", file=folder)
    if found:
        return found[0]
    if required:
        raise InputError(f"required table {name!r} not found (looked for {name}.csv and {name}.csv.gz)",
                         file=folder)
    return None


def csv_columns(con, file: Path) -> list[str]:
    """The header of a CSV or CSV.gz file, read directly (a sniffer would trip on the malformed rows we report).

    A UTF-8 byte-order mark is stripped; a header that is not comma-separated is refused.
    """
    try:
        with open_binary(file) as handle:
            raw = handle.readline()
    except (OSError, EOFError, zlib.error) as exc:
        raise InputError(f"cannot read the file (truncated or corrupt?): {first_line(exc)}", file=file) from exc
    try:
        text = raw.decode("utf-8").removeprefix("\ufeff")
    except UnicodeDecodeError as exc:
        raise InputError("the CSV header is not UTF-8 text", file=file, row="line 1") from exc
    header = next(csv.reader([text]), None)
    if not header or not "".join(header).strip():
        raise InputError("empty CSV file (no header line)", file=file)
    if len(header) == 1 and re.search(r"[;\t|]", header[0]):
        raise InputError("not a comma-separated file (the header holds ';', tab or '|'); save it with commas",
                         file=file)
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


def line_of(file, column: str, is_bad) -> str | None:
    """'line N' of the first data row of a CSV file whose `column` value satisfies `is_bad` (None for other files).

    Used only to locate an error already found in DuckDB, so the scan happens on the error path alone.
    """
    if file is None or not str(file).endswith((".csv", ".csv.gz")):
        return None
    try:
        with open_binary(Path(file)) as handle:
            reader = csv.reader(raw.decode("utf-8", errors="replace") for raw in handle)
            header = [c.strip().removeprefix("\ufeff") for c in next(reader, [])]
            if column not in header:
                return None
            index = header.index(column)
            for row in reader:
                if index < len(row) and is_bad(row[index].strip()):
                    return f"line {reader.line_num}"
    except (OSError, EOFError, zlib.error, csv.Error):
        return None
    return None


def located(exc: duckdb.Error, file: Path) -> InputError:
    """Turn a DuckDB CSV error into an InputError naming file, column and line (never the row's contents)."""
    text = str(exc)
    line = re.search(r"on Line:\s*(\d+)", text)
    column = re.search(r'converting column "([^"]+)"', text)
    row = f"line {line.group(1)}" if line else None
    message = first_line(exc)
    if "Could not convert" in text:
        detail = re.search(r"Could not convert string (.*?) to '([A-Z]+)'", text)
        if detail:
            kind = "date/time" if detail.group(2) in ("TIMESTAMP", "DATE") else detail.group(2).lower()
            message = f"unparsable {kind} value {detail.group(1)}"
    elif "unicode" in text.lower() or "utf-8" in text.lower():
        message, row = "not UTF-8 text", row or undecodable_line(file)
    elif isinstance(exc, duckdb.IOException) or "gzip" in text.lower() or "decompress" in text.lower():
        message = "cannot read the file (truncated or corrupt?)"
    elif "Original Line" in text:
        columns = re.search(r"Expected Number of Columns: (\d+) Found: (\d+)", text)
        message = "malformed row" + (f" ({columns.group(2)} fields, the header has {columns.group(1)})"
                                     if columns else "")
    else:
        message = re.sub(r"\s*Original Line:.*", "", message)
    return InputError(message, file=file, column=column.group(1) if column else None, row=row)


def execute_located(con, sql: str, file: Path) -> None:
    try:
        con.execute(sql)
    except (duckdb.ConversionException, duckdb.InvalidInputException, duckdb.IOException) as exc:
        raise located(exc, file) from exc
