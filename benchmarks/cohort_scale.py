"""Featurize a generated MIMIC-IV-layout cohort with >= 10M labevents rows; report rows/s, wall time, peak memory.

    python benchmarks/cohort_scale.py [--lab-rows 10000000] [--patients 20000] [--threads 2] [--memory-limit 3GB]
                                      [--data DIR  (keep/reuse the generated tables)]

The tables are written by DuckDB (COPY ... TO csv.gz) in the exact MIMIC-IV 2.2 hosp/ column schema.
Featurization (`build_cohort("mimic", ...)`, what `ehrjudge cohort --source mimic` runs) happens in a child
process; its peak RSS (ru_maxrss of the child, which includes DuckDB's buffers) is the memory figure. Target: 10M lab rows in <= 60 s, <= 4 GB.
Results go to benchmarks/results/cohort_scale.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import duckdb

RESULTS = Path(__file__).parent / "results" / "cohort_scale.json"
N_LAB_ITEMS = 300
N_ICD = 2000
N_DRUGS = 400
# The child imports only the cohort package (the full CLI also imports the judge/training stack).
CHILD = """
import json, sys, time
from pathlib import Path
from ehrjudge.cohort.build import build_cohort
from ehrjudge.cohort.featurize import FeatureConfig
started = time.perf_counter()
cohort = build_cohort("mimic", Path(sys.argv[2]), path=Path(sys.argv[1]), patients=None,
                      config=FeatureConfig(threads=int(sys.argv[3]), memory_limit=sys.argv[4]))
build_s = time.perf_counter() - started
matrix = cohort.matrix()
print(json.dumps({"build_s": build_s, "patients": matrix.shape[0], "features": matrix.shape[1],
                  "sparsity": float((matrix == 0).mean())}))
"""


def copy(con, select: str, path: Path) -> None:
    con.execute(f"COPY ({select}) TO '{path}' (HEADER, DELIMITER ',', COMPRESSION gzip)")


def generate(root: Path, patients: int, lab_rows: int, threads: int) -> dict:
    """Write hosp/*.csv.gz; every id is a deterministic hash of the row number."""
    hosp = root / "hosp"
    hosp.mkdir(parents=True)
    con = duckdb.connect()
    con.execute(f"SET threads = {threads}")
    subject = f"10000000 + CAST(hash(i * 7919) % {patients} AS BIGINT)"
    copy(con, f"""SELECT 10000000 + i AS subject_id, CASE WHEN i % 2 = 0 THEN 'M' ELSE 'F' END AS gender,
        18 + i % 70 AS anchor_age, 2150 + i % 30 AS anchor_year, '2011 - 2013' AS anchor_year_group,
        CASE WHEN i % 11 = 0 THEN DATE '2160-01-01' + to_days(CAST(i % 3000 AS INTEGER)) END AS dod
        FROM range({patients}) t(i)""", hosp / "patients.csv.gz")
    admissions = patients * 3
    copy(con, f"""SELECT {subject} AS subject_id, 20000000 + i AS hadm_id,
        TIMESTAMP '2150-01-01' + to_hours(i % 200000) AS admittime,
        TIMESTAMP '2150-01-01' + to_hours(i % 200000 + 4 + CAST(hash(i) % 300 AS BIGINT)) AS dischtime,
        NULL AS deathtime,
        'URGENT' AS admission_type, 'P1' AS admit_provider_id, 'EMERGENCY ROOM' AS admission_location,
        'HOME' AS discharge_location, 'Medicare' AS insurance, 'ENGLISH' AS language, 'MARRIED' AS marital_status,
        'WHITE' AS race, NULL AS edregtime, NULL AS edouttime, 0 AS hospital_expire_flag
        FROM range({admissions}) t(i)""", hosp / "admissions.csv.gz")
    copy(con, f"""SELECT {subject} AS subject_id, 20000000 + i % {admissions} AS hadm_id, 1 + i % 20 AS seq_num,
        'D' || lpad(CAST(hash(i + 1) % {N_ICD} AS VARCHAR), 4, '0') AS icd_code, 10 AS icd_version
        FROM range({patients * 10}) t(i)""", hosp / "diagnoses_icd.csv.gz")
    copy(con, f"""SELECT {subject} AS subject_id, 20000000 + i % {admissions} AS hadm_id, 1 AS seq_num,
        DATE '2150-01-01' AS chartdate, 'P' || lpad(CAST(hash(i + 2) % 500 AS VARCHAR), 6, '0') AS icd_code,
        10 AS icd_version FROM range({patients * 2}) t(i)""", hosp / "procedures_icd.csv.gz")
    copy(con, f"""SELECT {subject} AS subject_id, 20000000 + i % {admissions} AS hadm_id, 30000000 + i AS pharmacy_id,
        'poe' AS poe_id, 1 AS poe_seq, 'P1' AS order_provider_id, TIMESTAMP '2150-01-01' AS starttime,
        TIMESTAMP '2150-01-02' AS stoptime, 'MAIN' AS drug_type, 'Drug ' || (hash(i + 3) % {N_DRUGS}) AS drug,
        'CD' AS formulary_drug_cd, NULL AS gsn, '0' AS ndc, '1 mg' AS prod_strength, NULL AS form_rx,
        CAST(1 + hash(i) % 1000 AS VARCHAR) AS dose_val_rx, 'mg' AS dose_unit_rx, '1' AS form_val_disp,
        'TAB' AS form_unit_disp, 1 AS doses_per_24_hrs, 'PO' AS route FROM range({patients * 20}) t(i)""",
         hosp / "prescriptions.csv.gz")
    copy(con, f"""SELECT i AS labevent_id, {subject} AS subject_id, 20000000 + i % {admissions} AS hadm_id,
        40000000 + i // 8 AS specimen_id, 50800 + hash(i + 4) % {N_LAB_ITEMS} AS itemid, 'P1' AS order_provider_id,
        TIMESTAMP '2150-01-01' + to_minutes(i % 5000000) AS charttime,
        TIMESTAMP '2150-01-01' + to_minutes(i % 5000000 + 30) AS storetime,
        CAST((hash(i) % 100000) / 100.0 AS VARCHAR) AS value,
        CASE WHEN i % 10 = 0 THEN NULL ELSE (hash(i) % 100000) / 100.0 END AS valuenum, 'mg/dL' AS valueuom,
        0.5 AS ref_range_lower, 1.2 AS ref_range_upper, NULL AS flag, 'ROUTINE' AS priority, NULL AS comments
        FROM range({lab_rows}) t(i)""", hosp / "labevents.csv.gz")
    copy(con, f"""SELECT 50800 + i AS itemid, 'Lab item ' || i AS label, 'Blood' AS fluid, 'Chemistry' AS category
        FROM range({N_LAB_ITEMS}) t(i)""", hosp / "d_labitems.csv.gz")
    copy(con, f"""SELECT 'D' || lpad(CAST(i AS VARCHAR), 4, '0') AS icd_code, 10 AS icd_version,
        'Diagnosis ' || i AS long_title FROM range({N_ICD}) t(i)""", hosp / "d_icd_diagnoses.csv.gz")
    copy(con, """SELECT 'P' || lpad(CAST(i AS VARCHAR), 6, '0') AS icd_code, 10 AS icd_version,
        'Procedure ' || i AS long_title FROM range(500) t(i)""", hosp / "d_icd_procedures.csv.gz")
    con.close()
    return {"patients": patients, "labevents": lab_rows, "admissions": admissions, "diagnoses_icd": patients * 10,
            "procedures_icd": patients * 2, "prescriptions": patients * 20}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lab-rows", type=int, default=10_000_000)
    parser.add_argument("--patients", type=int, default=20_000)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--memory-limit", default="3GB")
    parser.add_argument("--data", type=Path, default=None,
                        help="keep the generated MIMIC folder here and reuse it when its sizes match")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="cohort-scale-") as work:
        work = Path(work)
        data = args.data or work / "mimic"
        stamp = data / "generated.json"
        started = time.perf_counter()
        wanted = {"patients": args.patients, "labevents": args.lab_rows}
        reused = stamp.exists() and {k: json.loads(stamp.read_text())[k] for k in wanted} == wanted
        if reused:
            counts = json.loads(stamp.read_text())
            print(f"reusing {data}", flush=True)
        else:
            if data.exists():
                shutil.rmtree(data)
            counts = generate(data, args.patients, args.lab_rows, args.threads)
            stamp.write_text(json.dumps(counts))
        generate_s = time.perf_counter() - started
        size = sum(f.stat().st_size for f in (data / "hosp").iterdir())
        print(f"{args.lab_rows:,} lab rows for {args.patients:,} patients ready in {generate_s:.1f} s "
              f"({size / 2**20:.0f} MiB gzipped)", flush=True)
        cmd = [sys.executable, "-c", CHILD, str(data), str(work / "cohort"), str(args.threads), args.memory_limit]
        load_before = os.getloadavg()[0]
        started = time.perf_counter()
        done = subprocess.run(cmd, capture_output=True, text=True)
        wall_s = time.perf_counter() - started
        if done.returncode != 0:
            sys.exit(f"featurization failed:\n{done.stderr}")
        peak_rss_mb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024  # KiB on Linux
        child = json.loads(done.stdout.strip().splitlines()[-1])
        summary = f"{child['patients']} patients x {child['features']} features, {child['sparsity']:.1%} zeros"
    total_rows = sum(v for k, v in counts.items() if k != "patients")
    result = {
        "lab_rows": args.lab_rows, "patients": args.patients, "total_event_rows": total_rows,
        "featurize_wall_s": round(wall_s, 2), "build_cohort_s": round(child["build_s"], 2),
        "lab_rows_per_s": round(args.lab_rows / wall_s),
        "event_rows_per_s": round(total_rows / wall_s), "peak_rss_mb": round(peak_rss_mb, 1),
        "generate_s": None if reused else round(generate_s, 2), "data_reused": reused,
        "input_gzip_mib": round(size / 2**20, 1),
        "threads": args.threads, "memory_limit": args.memory_limit, "cohort": summary,
        "targets": {"wall_s_max": 60, "peak_rss_mb_max": 4096},
        "meets_targets": wall_s <= 60 and peak_rss_mb <= 4096,
        "load_average_1min": {"before": round(load_before, 2), "after": round(os.getloadavg()[0], 2)},
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "duckdb": duckdb.__version__},
        "note": "featurize_wall_s: the child process end to end (Python start, imports, CSV.gz parsing, "
                "featurization, writing the cohort dir); build_cohort_s: the build_cohort call alone. "
                "The CPU may be shared with other jobs, so timings are noisy",
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    print(f"featurized {args.lab_rows:,} lab rows ({total_rows:,} event rows) in {wall_s:.1f} s: "
          f"{result['lab_rows_per_s']:,} lab rows/s, peak RSS {peak_rss_mb:.0f} MB -> {summary}")
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
