"""FHIR R4 (Bundle JSON, one per patient, or bulk NDJSON per resource type) -> normalized event tables.

Reads every *.json, *.ndjson and *.ndjson.gz under the path (sorted; a single file works too). Resources:
    Patient            id, gender (male -> 1), birthDate, deceasedBoolean / deceasedDateTime
    Encounter          subject, period.start/end -> admissions (length of stay in days)
    Condition          subject, code -> diagnoses     Procedure  subject, code -> procedures
    MedicationRequest  subject, medicationCodeableConcept (or medicationReference.display) -> drug name,
                       dosageInstruction[0].doseAndRate[0].doseQuantity.value -> dose
    Observation        category laboratory (or no category), code, valueQuantity.value -> labs
Codes: ICD-10/ICD-9 -> "ICD10:E119" (dots removed, as in MIMIC-IV), SNOMED -> "SCT:..", CPT -> "CPT:..",
LOINC -> "LOINC:..". Age = completed years from birthDate to deceasedDateTime, else to the patient's last
Encounter start, else to the cohort's last Encounter start. JSON that is neither a resource nor a Bundle is an
error, except a bulk-export manifest and `_*.json` metadata (skipped with a warning). Flattened rows go to DuckDB in batches, so memory
stays bounded.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import math
import zlib
from pathlib import Path

import pandas as pd

from ehrjudge.cohort.featurize import Origins
from ehrjudge.errors import InputError
from ehrjudge.io import first_line, open_binary

log = logging.getLogger(__name__)

BATCH = 100_000
GENDERS = {"male": 1.0, "female": 0.0, "other": 0.0, "unknown": 0.0}
SYSTEMS = [("icd-10", "ICD10"), ("icd10", "ICD10"), ("icd-9", "ICD9"), ("icd9", "ICD9"), ("snomed", "SCT"),
           ("cpt", "CPT"), ("loinc", "LOINC"), ("rxnorm", "RXNORM")]
LAB_CATEGORIES = {"laboratory", "lab"}


def fhir_files(path: Path) -> list[Path]:
    if path.is_file():
        return [path]
    files = sorted(p for p in path.rglob("*") if p.is_file() and p.name.endswith((".json", ".ndjson", ".ndjson.gz")))
    if not files:
        raise InputError("no FHIR files (*.json, *.ndjson, *.ndjson.gz) found", file=path)
    return files


def iter_resources(file: Path):
    """Yield (resource, where) for each resource in an NDJSON file or a JSON Bundle/resource file.

    Text must be UTF-8; a truncated or corrupt .gz, a byte that is not UTF-8 and JSON that is neither a Bundle nor
    a resource are InputErrors naming the file and line. Skipped, with a warning: a bulk-export manifest (an
    `output` list, no resourceType) and metadata files named `_*.json` (clinosim's `_generator_metadata.json`).
    """
    if file.name.endswith((".ndjson", ".ndjson.gz")):
        yield from _ndjson_resources(file)
        return
    try:
        raw = file.read_bytes()
    except OSError as exc:
        raise InputError(f"cannot read the file: {exc.strerror or exc}", file=file) from exc
    try:
        data = json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError as exc:
        line = raw[:exc.start].count(b"\n") + 1
        raise InputError("not UTF-8 text", file=file, row=f"line {line}") from exc
    except json.JSONDecodeError as exc:
        raise InputError(f"malformed JSON: {exc.msg}", file=file, row=f"line {exc.lineno}") from exc
    if isinstance(data, dict) and "resourceType" not in data and (
            isinstance(data.get("output"), list) or file.name.startswith("_")):
        log.warning("skipping %s: a bulk-export manifest or a metadata file, not a FHIR resource", file)
        return
    if not isinstance(data, dict) or not isinstance(data.get("resourceType"), str):
        raise InputError("not a FHIR resource or Bundle (no resourceType)", file=file)
    if data["resourceType"] == "Bundle":
        for index, entry in enumerate(data.get("entry") or []):
            resource = entry.get("resource") if isinstance(entry, dict) else None
            if not isinstance(resource, dict):
                raise InputError("malformed Bundle entry: no resource", file=file, row=f"entry {index}")
            yield resource, f"entry {index}"
    else:
        yield data, "resource 0"


def _ndjson_resources(file: Path):
    number = 0
    try:
        with open_binary(file) as handle:
            for number, raw in enumerate(handle, start=1):
                try:
                    line = raw.decode("utf-8")
                except UnicodeDecodeError as exc:
                    raise InputError("not UTF-8 text", file=file, row=f"line {number}") from exc
                if not line.strip():
                    continue
                try:
                    resource = json.loads(line)
                except json.JSONDecodeError as exc:
                    raise InputError(f"malformed JSON: {exc.msg}", file=file, row=f"line {number}") from exc
                if not isinstance(resource, dict) or not isinstance(resource.get("resourceType"), str):
                    raise InputError("malformed row: not a FHIR resource (a JSON object with a resourceType)",
                                     file=file, row=f"line {number}")
                yield resource, f"line {number}"
    except (OSError, EOFError, zlib.error) as exc:  # gzip: truncated stream, bad CRC, not gzip at all
        raise InputError(f"cannot read the file (truncated or corrupt?): {first_line(exc)}", file=file,
                         row=f"line {number + 1}") from exc


def reference_id(ref) -> str | None:
    if not isinstance(ref, dict) or not ref.get("reference"):
        return None
    text = str(ref["reference"])
    return text[len("urn:uuid:"):] if text.startswith("urn:uuid:") else text.rsplit("/", 1)[-1]


def parse_date(value, file: Path, column: str, where: str) -> dt.datetime | None:
    """FHIR date/dateTime (YYYY, YYYY-MM, YYYY-MM-DD, full instant) -> naive UTC datetime."""
    if value is None:
        return None
    text = str(value)
    try:
        if len(text) == 4:
            return dt.datetime(int(text), 1, 1)
        if len(text) == 7:
            return dt.datetime(int(text[:4]), int(text[5:7]), 1)
        parsed = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError as exc:
        raise InputError(f"unparsable date/time {text!r}", file=file, column=column, row=where) from exc
    if parsed.tzinfo is not None:
        parsed = parsed.astimezone(dt.timezone.utc).replace(tzinfo=None)
    return parsed


def pick_code(concept, file: Path, column: str, where: str) -> tuple[str, str] | None:
    """(code, description) from a CodeableConcept: first coding with a known system, else the first, else text."""
    if not isinstance(concept, dict):
        return None
    codings = [c for c in concept.get("coding") or [] if isinstance(c, dict) and c.get("code")]
    for coding in sorted(codings, key=lambda c: _system_rank(c.get("system"))):
        prefix = _system_prefix(coding.get("system"))
        code = str(coding["code"]).strip()
        if prefix in ("ICD10", "ICD9"):
            code = code.replace(".", "")
        description = coding.get("display") or concept.get("text") or code
        return (f"{prefix}:{code}" if prefix else code), str(description)
    if concept.get("text"):
        return str(concept["text"]), str(concept["text"])
    return None


def _system_prefix(system) -> str | None:
    system = str(system or "").lower()
    return next((prefix for key, prefix in SYSTEMS if key in system), None)


def _system_rank(system) -> int:
    prefix = _system_prefix(system)
    order = ["ICD10", "ICD9", "CPT", "LOINC", "RXNORM", "SCT"]
    return order.index(prefix) if prefix in order else len(order)


def finite_number(value, file: Path, column: str, where: str) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise InputError(f"value {value!r} is not a number", file=file, column=column, row=where)
    if not math.isfinite(float(value)):
        raise InputError(f"value {value!r} is not a finite number", file=file, column=column, row=where)
    return float(value)


class Sink:
    """Buffers flattened rows per table and appends them to DuckDB in batches."""

    def __init__(self, con):
        self.con, self.rows = con, {}

    def add(self, table: str, row: tuple) -> None:
        rows = self.rows.setdefault(table, [])
        rows.append(row)
        if len(rows) >= BATCH:
            self.flush(table)

    def flush(self, table: str | None = None) -> None:
        for name in [table] if table else list(self.rows):
            rows = self.rows.get(name) or []
            if not rows:
                continue
            columns = [c.split()[0].strip('"') for c in TABLE_COLUMNS[name].split(", ")]
            frame = pd.DataFrame(rows, columns=columns)
            self.con.register("fhir_batch", frame)
            self.con.execute(f"INSERT INTO {name} SELECT * FROM fhir_batch")
            self.con.unregister("fhir_batch")
            self.rows[name] = []


TABLE_COLUMNS = {
    "fhir_patients": "subject_id VARCHAR, gender DOUBLE, birth TIMESTAMP, deceased DOUBLE, death TIMESTAMP",
    "fhir_encounters": "subject_id VARCHAR, start_time TIMESTAMP, los_days DOUBLE",
    "diagnoses": "subject_id VARCHAR, code VARCHAR",
    "procedures": "subject_id VARCHAR, code VARCHAR",
    "prescriptions": "subject_id VARCHAR, code VARCHAR, value DOUBLE",
    "labs": "subject_id VARCHAR, code VARCHAR, value DOUBLE",
    "dictionary": '"group" VARCHAR, code VARCHAR, description VARCHAR',
}


def load_fhir(con, path: Path, patients: int | None = None) -> tuple[Origins, list[Path]]:
    """Fill the normalized tables from FHIR files; returns origins and the files read."""
    path = Path(path)
    files = fhir_files(path)
    for name in ("fhir_patients", "fhir_encounters"):
        con.execute(f"CREATE OR REPLACE TEMP TABLE {name} ({TABLE_COLUMNS[name]})")
    sink = Sink(con)
    seen_files: dict[str, str] = {}
    descriptions: dict[tuple[str, str], str] = {}
    for file in files:
        for resource, where in iter_resources(file):
            kind = resource.get("resourceType")
            handler = HANDLERS.get(kind)
            if handler is None:
                continue
            seen_files.setdefault(kind, str(file))
            handler(resource, file, where, sink, descriptions)
    for (group, code), description in sorted(descriptions.items()):
        sink.add("dictionary", (group, code, description))
    sink.flush()
    if "Patient" not in seen_files:
        raise InputError("no Patient resources found", file=path)
    _finish(con, patients, seen_files)
    origins = Origins(files={
        "patients": (seen_files["Patient"], "Patient.id"), "patients_id": (seen_files["Patient"], "Patient.id"),
        "gender": (seen_files["Patient"], "Patient.gender"), "age": (seen_files["Patient"], "Patient.birthDate"),
        "is_dead": (seen_files["Patient"], "Patient.deceased[x]"),
        "admissions": (seen_files.get("Encounter"), "Encounter.period"),
        "prescriptions": (seen_files.get("MedicationRequest"), "MedicationRequest.doseQuantity.value"),
        "labs": (seen_files.get("Observation"), "Observation.valueQuantity.value"),
    })
    for table, kind in (("admissions", "Encounter"), ("diagnoses", "Condition"), ("procedures", "Procedure"),
                        ("prescriptions", "MedicationRequest"), ("labs", "Observation")):
        origins.files[f"{table}_id"] = (seen_files.get(kind), f"{kind}.subject")
    return origins, files


def _finish(con, patients: int | None, seen_files: dict) -> None:
    """Ages (at death, else last encounter, else the cohort's last encounter) and the patients/admissions tables."""
    con.execute("INSERT INTO admissions SELECT subject_id, los_days FROM fhir_encounters")
    con.execute("INSERT INTO source_patients SELECT subject_id FROM fhir_patients")
    last = con.execute("SELECT max(start_time) FROM fhir_encounters").fetchone()[0]
    order = "ORDER BY TRY_CAST(subject_id AS BIGINT) NULLS LAST, subject_id"
    limit = f"{order} LIMIT {int(patients)}" if patients else ""
    con.execute(f"""CREATE OR REPLACE TEMP TABLE fhir_ages AS
        SELECT p.subject_id, p.gender, p.deceased, p.birth,
               coalesce(p.death, e.last_start, CAST(? AS TIMESTAMP)) AS at_time
        FROM (SELECT * FROM fhir_patients {limit}) p
        LEFT JOIN (SELECT subject_id, max(start_time) AS last_start FROM fhir_encounters GROUP BY 1) e
        USING (subject_id)""", [last])
    bad = con.execute("SELECT subject_id FROM fhir_ages WHERE at_time IS NULL LIMIT 1").fetchall()
    if bad:
        raise InputError(f"cannot compute the age of patient {bad[0][0]!r}: no deceasedDateTime and no Encounter "
                         "dates in the whole cohort", file=seen_files["Patient"], column="Encounter.period.start")
    con.execute("""INSERT INTO patients SELECT subject_id, gender,
        date_diff('year', birth, at_time) - CASE WHEN strftime(at_time, '%m%d') < strftime(birth, '%m%d')
                                                 THEN 1 ELSE 0 END,
        deceased FROM fhir_ages""")


def _patient(resource, file, where, sink, descriptions) -> None:
    subject = resource.get("id")
    if not subject:
        raise InputError("Patient without an id", file=file, column="Patient.id", row=where)
    gender = resource.get("gender")
    if gender not in GENDERS:
        raise InputError(f"unknown gender code {gender!r} (expected one of {sorted(GENDERS)})", file=file,
                         column="Patient.gender", row=where)
    birth = parse_date(resource.get("birthDate"), file, "Patient.birthDate", where)
    if birth is None:
        raise InputError("Patient without birthDate (age cannot be computed)", file=file,
                         column="Patient.birthDate", row=where)
    death = parse_date(resource.get("deceasedDateTime"), file, "Patient.deceasedDateTime", where)
    deceased = 1.0 if death is not None or resource.get("deceasedBoolean") is True else 0.0
    sink.add("fhir_patients", (str(subject), GENDERS[gender], birth, deceased, death))


def _subject(resource, file, where, kind: str) -> str:
    subject = reference_id(resource.get("subject") or resource.get("patient"))
    if subject is None:
        raise InputError(f"{kind} without a subject reference", file=file, column=f"{kind}.subject", row=where)
    return subject


def _encounter(resource, file, where, sink, descriptions) -> None:
    subject = _subject(resource, file, where, "Encounter")
    period = resource.get("period") or {}
    start = parse_date(period.get("start"), file, "Encounter.period.start", where)
    end = parse_date(period.get("end"), file, "Encounter.period.end", where)
    los = (end - start).total_seconds() / 86400.0 if start is not None and end is not None else None
    sink.add("fhir_encounters", (subject, start, los))


def _coded(table: str, group: str, kind: str):
    def handle(resource, file, where, sink, descriptions) -> None:
        subject = _subject(resource, file, where, kind)
        picked = pick_code(resource.get("code"), file, f"{kind}.code", where)
        if picked is None:
            log.debug("%s %s has no code; not counted", kind, where)
            return
        code, description = picked
        descriptions.setdefault((group, code), description)
        sink.add(table, (subject, code))

    return handle


def _medication(resource, file, where, sink, descriptions) -> None:
    subject = _subject(resource, file, where, "MedicationRequest")
    concept = resource.get("medicationCodeableConcept") or {}
    name = concept.get("text") or next((c.get("display") for c in concept.get("coding") or [] if c.get("display")),
                                       None) or (resource.get("medicationReference") or {}).get("display")
    if not name:
        log.debug("MedicationRequest %s has no drug name; not counted", where)
        return
    dose = None
    for instruction in (resource.get("dosageInstruction") or [])[:1]:
        for rate in (instruction.get("doseAndRate") or [])[:1]:
            dose = finite_number((rate.get("doseQuantity") or {}).get("value"), file,
                                 "MedicationRequest.doseQuantity.value", where)
    descriptions.setdefault(("prescriptions", str(name)), str(name))
    sink.add("prescriptions", (subject, str(name), dose))


def _observation(resource, file, where, sink, descriptions) -> None:
    categories = {str(c.get("code", "")).lower() for cat in resource.get("category") or []
                  for c in cat.get("coding") or []}
    if categories and not categories & LAB_CATEGORIES:
        return
    subject = _subject(resource, file, where, "Observation")
    picked = pick_code(resource.get("code"), file, "Observation.code", where)
    if picked is None:
        return
    code, description = picked
    value = finite_number((resource.get("valueQuantity") or {}).get("value"), file,
                          "Observation.valueQuantity.value", where)
    descriptions.setdefault(("labs", code), description)
    sink.add("labs", (subject, code, value))


HANDLERS = {
    "Patient": _patient,
    "Encounter": _encounter,
    "Condition": _coded("diagnoses", "diagnoses", "Condition"),
    "Procedure": _coded("procedures", "procedures", "Procedure"),
    "MedicationRequest": _medication,
    "Observation": _observation,
}
