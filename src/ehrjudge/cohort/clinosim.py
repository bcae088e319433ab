"""The built-in default cohort: run the clinosim simulator with a fixed seed and load its CSV tables.

clinosim's `-p` is a catchment population; only some of it has encounters (-p 1000 gave 596 patients with
rows). We ask for about N / 0.55 people, retry with a larger catchment if fewer than N patients came out,
and keep the first N patient ids in sorted order. patients.csv repeats a patient's row once per encounter.
"""

from __future__ import annotations

import logging
import math
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from ehrjudge.cohort.featurize import Origins
from ehrjudge.cohort.tables import execute_located, find_file, read_csv_sql, require_columns, sql_str
from ehrjudge.errors import EhrJudgeError, InputError

log = logging.getLogger(__name__)

SIM_START, SIM_END = "2024-01-01", "2024-12-31"
COUNTRIES = ("US", "JP")
YIELD_GUESS = 0.55  # patients with records per catchment person (0.596 measured at -p 1000, seed 42)
TABLES = {
    "patients": ["patient_id", "age", "sex"],
    "encounters": ["patient_id", "admission_datetime", "discharge_datetime"],
    "diagnoses": ["patient_id", "discharge_diagnosis_code", "discharge_diagnosis_name", "deceased"],
    "procedures": ["patient_id", "procedure_code", "procedure_name"],
    "prescriptions": ["patient_id", "drug_name", "dose"],
    "lab_results": ["patient_id", "lab_name", "value"],
}
EVENT_FILES = {"admissions": "encounters", "diagnoses": "diagnoses", "procedures": "procedures",
               "prescriptions": "prescriptions", "labs": "lab_results"}  # normalized table -> clinosim table


def simulate(population: int, seed: int, out: Path, formats=("csv",), country: str = "US") -> Path:
    """Run `clinosim simulate` (2024, `country` US or JP) into `out`; returns out/csv.

    JP runs with --allow-legacy: without the JP-CLINS terminology package clinosim refuses JP unless told to emit
    its legacy 5-digit JLAC10 lab codes, which are still codes a cohort can be featurized on.
    """
    if country not in COUNTRIES:
        raise InputError(f"unknown clinosim country {country!r}; choose one of {', '.join(COUNTRIES)}")
    exe = shutil.which("clinosim") or str(Path(sys.executable).with_name("clinosim"))
    cmd = [exe, "simulate", "--country", country, "-p", str(population), "-s", str(seed), "--start", SIM_START,
           "--end", SIM_END, "--format", *formats, "-o", str(out)] + (["--allow-legacy"] if country == "JP" else [])
    log.info("running %s", " ".join(cmd))
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0:
        raise EhrJudgeError(f"clinosim failed (exit {done.returncode}): {done.stderr.strip()[-2000:]}")
    return out / "csv"


def simulate_patients(patients: int, seed: int, workdir: Path, formats=("csv",), country: str = "US") -> Path:
    """Simulate until at least `patients` patients have records; returns the csv folder (other `formats` beside
    it: fhir -> fhir_r4/). `formats` must include csv, which is what the patients are counted in."""
    if "csv" not in formats:
        raise InputError(f"simulate_patients counts patients in the csv output; formats {formats} lack it")
    population = max(50, math.ceil(patients / YIELD_GUESS) + 20)
    for attempt in range(4):
        run_dir = workdir / f"sim-p{population}"
        csv_dir = simulate(population, seed, run_dir, formats, country)
        got = count_patients(csv_dir / "patients.csv")
        log.info("clinosim -p %d gave %d patients with records", population, got)
        if got >= patients:
            return csv_dir
        population = math.ceil(population * max(1.3, 1.1 * patients / max(got, 1)))
    raise EhrJudgeError(f"clinosim gave only {got} patients with records after 4 tries (wanted {patients})")


def count_patients(file: Path) -> int:
    import duckdb

    with duckdb.connect(":memory:") as con:
        return con.execute(f"SELECT count(DISTINCT patient_id) FROM read_csv({sql_str(file)}, all_varchar = true)"
                           ).fetchone()[0]


def load_clinosim(con, csv_dir: Path, patients: int | None = None) -> Origins:
    """Fill the normalized event tables from a clinosim csv/ folder (first `patients` ids if given)."""
    csv_dir = Path(csv_dir)
    if (csv_dir / "csv").is_dir():
        csv_dir = csv_dir / "csv"
    files = {name: find_file(csv_dir, name) for name in TABLES}
    for name, needed in TABLES.items():
        require_columns(con, files[name], needed)
    origins = Origins(files={
        "patients": (str(files["patients"]), "patient_id"), "patients_id": (str(files["patients"]), "patient_id"),
        "gender": (str(files["patients"]), "sex"), "age": (str(files["patients"]), "age"),
        "is_dead": (str(files["diagnoses"]), "deceased"),
        "admissions": (str(files["encounters"]), "discharge_datetime"),
        "prescriptions": (str(files["prescriptions"]), "dose"), "labs": (str(files["lab_results"]), "value"),
    })
    for table, name in EVENT_FILES.items():
        origins.files[f"{table}_id"] = (str(files[name]), "patient_id")
    execute_located(con, f"""CREATE OR REPLACE TEMP TABLE raw_patients AS
        SELECT patient_id, min(age) AS age, min(sex) AS sex
        FROM {read_csv_sql(files['patients'], {'age': 'DOUBLE'})} WHERE patient_id IS NOT NULL GROUP BY patient_id""",
                    files["patients"])
    con.execute("INSERT INTO source_patients SELECT patient_id FROM raw_patients")
    bad = con.execute("SELECT patient_id, sex FROM raw_patients WHERE sex IS NULL OR sex NOT IN ('M', 'F', 'O', 'U') "
                      "LIMIT 1").fetchall()
    if bad:
        raise InputError(f"unknown sex code {bad[0][1]!r} for patient {bad[0][0]!r}", file=files["patients"],
                         column="sex")
    limit = f"LIMIT {int(patients)}" if patients else ""
    execute_located(con, f"""CREATE OR REPLACE TEMP TABLE dead AS
        SELECT patient_id, max(CASE WHEN lower(deceased) = 'true' THEN 1 ELSE 0 END) AS is_dead
        FROM {read_csv_sql(files['diagnoses'], {})} GROUP BY patient_id""", files["diagnoses"])
    con.execute(f"""INSERT INTO patients
        SELECT p.patient_id, CASE WHEN p.sex = 'M' THEN 1 ELSE 0 END, p.age, coalesce(d.is_dead, 0)
        FROM (SELECT * FROM raw_patients ORDER BY patient_id {limit}) p LEFT JOIN dead d USING (patient_id)""")
    execute_located(con, f"""INSERT INTO admissions
        SELECT patient_id, epoch(discharge_datetime - admission_datetime) / 86400.0
        FROM {read_csv_sql(files['encounters'], {'admission_datetime': 'TIMESTAMP', 'discharge_datetime': 'TIMESTAMP'})}
        """, files["encounters"])
    dx = read_csv_sql(files["diagnoses"], {})
    execute_located(con, f"""CREATE OR REPLACE TEMP TABLE raw_dx AS
        SELECT patient_id, 'ICD10:' || replace(discharge_diagnosis_code, '.', '') AS code,
               discharge_diagnosis_name AS name FROM {dx} WHERE discharge_diagnosis_code IS NOT NULL""",
                    files["diagnoses"])
    con.execute("INSERT INTO diagnoses SELECT patient_id, code FROM raw_dx")
    con.execute("""INSERT INTO dictionary SELECT 'diagnoses', code, min(name) FROM raw_dx GROUP BY code""")
    px = read_csv_sql(files["procedures"], {})
    execute_located(con, f"""CREATE OR REPLACE TEMP TABLE raw_px AS
        SELECT patient_id, 'CPT:' || procedure_code AS code, procedure_name AS name FROM {px}
        WHERE procedure_code IS NOT NULL""", files["procedures"])
    con.execute("INSERT INTO procedures SELECT patient_id, code FROM raw_px")
    con.execute("""INSERT INTO dictionary SELECT 'procedures', code, replace(min(name), '_', ' ')
        FROM raw_px GROUP BY code""")
    rx = read_csv_sql(files["prescriptions"], {})
    execute_located(con, f"""INSERT INTO prescriptions
        SELECT patient_id, drug_name, TRY_CAST(nullif(regexp_extract(dose, '[0-9]*\\.?[0-9]+'), '') AS DOUBLE)
        FROM {rx} WHERE drug_name IS NOT NULL""", files["prescriptions"])
    labs = read_csv_sql(files["lab_results"], {})
    execute_located(con, f"""INSERT INTO labs
        SELECT patient_id, lab_name, TRY_CAST(value AS DOUBLE) FROM {labs} WHERE lab_name IS NOT NULL""",
                    files["lab_results"])
    return origins


def copy_raw(csv_dir: Path, raw: Path) -> None:
    target = raw / "csv"
    target.mkdir(parents=True, exist_ok=True)
    for file in sorted(Path(csv_dir).glob("*.csv")):
        shutil.copy2(file, target / file.name)


def build_simulated(con, raw: Path, patients: int, seed: int) -> Origins:
    """Simulate, keep the CSVs under raw/csv, and load them."""
    with tempfile.TemporaryDirectory(prefix=".clinosim-", dir=raw.parent) as work:
        csv_dir = simulate_patients(patients, seed, Path(work))
        copy_raw(csv_dir, raw)
    origins = load_clinosim(con, raw / "csv", patients=patients)
    return origins
