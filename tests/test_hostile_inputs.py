"""Hostile inputs (issue 20): one row per case, each a clear error naming file/column/row with nothing written, or a
documented handling. Rows `issue20-N...` pin the cases the issue found getting through; rows `kept-...` pin cases
that already got a clean error, so that none regresses.
"""

import gzip
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from test_scoring_cli import FEATURES, vectors
from typer.testing import CliRunner

from ehrjudge.cli import app
from ehrjudge.cohort.build import build_cohort
from ehrjudge.cohort.featurize import FeatureConfig
from ehrjudge.cohort.schema import Cohort, Schema
from ehrjudge.errors import ConfigError, EhrJudgeError, InputError

FIXTURES = Path(__file__).parent / "fixtures"
ALL_CODES = FeatureConfig(min_patients=1)


# ---- helpers -----------------------------------------------------------------------------------------------------

def lenient() -> FeatureConfig:
    return FeatureConfig(min_patients=1, strict=False)


def mimic(tmp_path: Path) -> Path:
    root = tmp_path / "mimic"
    shutil.copytree(FIXTURES / "mimic", root)
    return root


def fhir(tmp_path: Path) -> Path:
    root = tmp_path / "fhir"
    shutil.copytree(FIXTURES / "fhir" / "ndjson", root)
    return root


def edit(file: Path, old: str, new: str) -> None:
    text = file.read_text()
    assert old in text, (file, old)
    file.write_text(text.replace(old, new, 1))


def build(source: str, root: Path, tmp_path: Path, config: FeatureConfig = ALL_CODES) -> Cohort:
    return build_cohort(source, tmp_path / "out", path=root, patients=None, config=config)


def refused_build(source: str, root: Path, tmp_path: Path, pattern: str, config: FeatureConfig = ALL_CODES) -> str:
    """The build raises an EhrJudgeError matching `pattern` and leaves nothing beside its output."""
    with pytest.raises(EhrJudgeError) as error:
        build(source, root, tmp_path, config)
    assert re.search(pattern, str(error.value)), str(error.value)
    assert not (tmp_path / "out").exists() and not list(tmp_path.glob(".out.*"))
    return str(error.value)


def scoring_inputs(tmp_path: Path) -> dict:
    """A 200-patient reference, an 80-patient holdout (8 features) and 60 synthetic records."""
    schema = Schema(FEATURES, source="test")
    paths = {}
    for name, n, seed in (("reference", 200, 1), ("holdout", 80, 2)):
        paths[name] = tmp_path / name
        paths[name].mkdir(parents=True)
        Cohort(vectors(n, seed, "subject_id"), schema).save(paths[name])
    paths["records"] = vectors(60, 3, "record_id")
    return paths


def write_records(tmp_path: Path, frame: pd.DataFrame, name: str = "synthetic.csv") -> Path:
    path = tmp_path / name
    if name.endswith(".parquet"):
        frame.to_parquet(path, index=False)
    else:
        frame.to_csv(path, index=False)
    return path


def cli(*args):
    return CliRunner().invoke(app, [str(a) for a in args])


def refused_cli(args, pattern: str, out: Path) -> str:
    """The command fails with an EhrJudgeError (exit 2 from main) matching `pattern`; `out` is not written."""
    result = cli(*args)
    assert isinstance(result.exception, EhrJudgeError), (result.output, result.exception)
    assert re.search(pattern, str(result.exception)), str(result.exception)
    if out.parent.is_dir() and not out.is_dir():
        assert not out.exists() and not list(out.parent.glob(f".{out.name}.*"))
    return str(result.exception)


def score_args(paths: dict, synthetic: Path, out: Path, *extra):
    return ["score", "--reference", paths["reference"], "--synthetic", synthetic, "--out", out, *extra]


def dead_pid() -> int:
    done = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    return int(done.stdout)


# ---- 1. values beyond float32 ------------------------------------------------------------------------------------

def case_1_score_beyond_float32(tmp_path):
    paths = scoring_inputs(tmp_path)
    frame = paths["records"]
    frame.loc[4, "age"] = 1e40
    out = tmp_path / "scores.csv"
    refused_cli(score_args(paths, write_records(tmp_path, frame), out),
                r"value 1e\+40 lies beyond the float32 range.*synthetic\.csv, column 'age', row 4 \(record_id=r4\)", out)


def case_1_evaluate_beyond_float32(tmp_path):
    paths = scoring_inputs(tmp_path)
    frame = paths["records"]
    frame.loc[2, "labs_glucose"] = -1e39
    out = tmp_path / "report.json"
    refused_cli(["evaluate", "--reference", paths["reference"], "--synthetic", write_records(tmp_path, frame),
                 "--out", out], r"beyond the float32 range.*column 'labs_glucose', row 2", out)


def case_1_far_outlier_inside_float32_is_scored(tmp_path):
    # Handling: a value the float32 product overflows on (3e38 / std 0.5) is recomputed in float64
    paths = scoring_inputs(tmp_path)
    frame = paths["records"]
    frame.loc[0, "gender"] = 3e38
    out = tmp_path / "scores.csv"
    result = cli(*score_args(paths, write_records(tmp_path, frame), out, "--holdout", paths["holdout"]))
    assert result.exit_code == 0, (result.output, result.exception)
    scores = pd.read_csv(out)
    assert np.isfinite(scores["mahalanobis"]).all() and scores["realism_score"].between(1, 10).all()
    assert scores.loc[0, "realism_score"] == scores["realism_score"].min()


def case_1_cohort_value_beyond_float32(tmp_path):
    root = mimic(tmp_path)
    edit(root / "hosp" / "labevents.csv", "1.2,1.2,mg/dL", "1.2,1e40,mg/dL")
    refused_build("mimic", root, tmp_path, r"not a finite number in float32 range.*labevents\.csv, column 'valuenum', "
                                           r"row subject_id=10000001")


# ---- 2. ids with leading zeros -----------------------------------------------------------------------------------

def case_2_csv_ids_keep_leading_zeros(tmp_path):
    paths = scoring_inputs(tmp_path)
    frame = paths["records"]
    frame["record_id"] = [f"{i:03d}" for i in range(len(frame))]
    out = tmp_path / "scores.csv"
    result = cli(*score_args(paths, write_records(tmp_path, frame), out))
    assert result.exit_code == 0, result.output
    assert pd.read_csv(out, dtype=str)["record_id"].tolist()[:3] == ["000", "001", "002"]
    shown = cli("show", "--cohort", paths["reference"], "--records", tmp_path / "synthetic.csv", "--record", "007")
    assert shown.exit_code == 0, (shown.output, shown.exception)
    assert shown.output.startswith("Demographics:")


# ---- 3. a non-integer subject_id in an event table ---------------------------------------------------------------

def case_3_labevents_subject_not_integer(tmp_path):
    root = mimic(tmp_path)
    edit(root / "hosp" / "labevents.csv", "4,10000002,", "4,abc,")
    refused_build("mimic", root, tmp_path, r"unparsable bigint value 'abc'.*labevents\.csv, column 'subject_id', "
                                           r"row line 5")


# ---- 4. orphan rows ----------------------------------------------------------------------------------------------

def case_4_orphan_admission_strict(tmp_path):
    root = mimic(tmp_path)
    edit(root / "hosp" / "admissions.csv", "10000002,20000003", "99999999,20000003")
    refused_build("mimic", root, tmp_path, r"1 admissions row\(s\) of patient ids missing from the patients.*"
                                           r"'99999999'.*admissions\.csv, column 'subject_id', row line 4")


def case_4_orphan_diagnosis_lenient_warns(tmp_path, caplog):
    root = mimic(tmp_path)
    edit(root / "hosp" / "diagnoses_icd.csv", "10000002,20000003,1,4019,9", "77777777,20000003,1,4019,9")
    cohort = build("mimic", root, tmp_path, lenient())
    assert len(cohort) == 3
    assert "1 diagnoses row(s) of patient ids missing" in caplog.text and "left out (strict false)" in caplog.text


def case_4_fhir_resource_of_missing_patient(tmp_path):
    root = fhir(tmp_path)
    edit(root / "Condition.ndjson", '"subject": {"reference": "Patient/p1"}', '"subject": {"reference": "Patient/p9"}')
    refused_build("fhir", root, tmp_path, r"diagnoses row\(s\) of patient ids missing.*'p9'.*Condition\.ndjson, "
                                          r"column 'Condition.subject'")


# ---- 5. negative durations and ages ------------------------------------------------------------------------------

def case_5_discharge_before_admission_strict(tmp_path):
    root = mimic(tmp_path)
    edit(root / "hosp" / "admissions.csv", "2150-01-03 22:00:00", "2149-01-03 22:00:00")
    refused_build("mimic", root, tmp_path, r"negative length of stay.*admissions\.csv, column 'dischtime', "
                                           r"row subject_id=10000001")


def case_5_discharge_before_admission_lenient(tmp_path):
    # Handling (strict false): the stay still counts; its length is left out of the statistics
    root = mimic(tmp_path)
    edit(root / "hosp" / "admissions.csv", "2150-01-03 22:00:00", "2149-01-03 22:00:00")
    vectors_ = build("mimic", root, tmp_path, lenient()).vectors.set_index("subject_id")
    assert vectors_.loc["10000001", "admissions_count"] == 2
    assert vectors_.loc["10000001", "admissions_los_min"] == pytest.approx(4.5)  # the other stay, 4.5 days


def case_5_negative_age_strict_and_lenient(tmp_path):
    root = mimic(tmp_path)
    edit(root / "hosp" / "patients.csv", "10000003,M,80", "10000003,M,-80")
    refused_build("mimic", root, tmp_path, r"negative age.*patients\.csv, column 'anchor_age', row subject_id=10000003")
    assert list(build("mimic", root, tmp_path, lenient()).vectors["subject_id"]) == ["10000001", "10000002"]


# ---- 6. duplicate or missing record ids --------------------------------------------------------------------------

def case_6_duplicate_record_id_score(tmp_path):
    paths = scoring_inputs(tmp_path)
    frame = paths["records"]
    frame.loc[9, "record_id"] = "r3"
    out = tmp_path / "scores.csv"
    refused_cli(score_args(paths, write_records(tmp_path, frame), out),
                r"duplicate record_id 'r3' \(rows 3 and 9\).*column 'record_id', row 9", out)


def case_6_missing_record_id_evaluate(tmp_path):
    paths = scoring_inputs(tmp_path)
    frame = paths["records"]
    frame.loc[5, "record_id"] = None
    out = tmp_path / "report.json"
    refused_cli(["evaluate", "--reference", paths["reference"], "--synthetic",
                 write_records(tmp_path, frame, "synthetic.parquet"), "--out", out],
                r"missing record_id.*synthetic\.parquet, column 'record_id', row 5", out)


def case_6_duplicate_record_id_judge(tmp_path):
    paths = scoring_inputs(tmp_path)
    frame = paths["records"]
    frame.loc[1, "record_id"] = "r0"
    out = tmp_path / "judged.csv"
    refused_cli(["judge", "--reference", paths["reference"], "--synthetic", write_records(tmp_path, frame),
                 "--out", out, "--model", tmp_path / "no-model"], r"duplicate record_id 'r0'", out)


def case_6_duplicate_id_in_the_python_api(tmp_path):
    from ehrjudge.scoring.realism import score_records

    paths = scoring_inputs(tmp_path)
    frame = paths["records"]
    frame.loc[1, "record_id"] = "r0"
    with pytest.raises(InputError, match=r"duplicate record_id 'r0'"):
        score_records(Cohort.load(paths["reference"]), frame)


# ---- 7. X.csv and X.csv.gz ---------------------------------------------------------------------------------------

def case_7_csv_and_csv_gz_both_present(tmp_path):
    root = mimic(tmp_path)
    patients = root / "hosp" / "patients.csv"
    (root / "hosp" / "patients.csv.gz").write_bytes(gzip.compress(patients.read_text().splitlines()[0].encode()))
    refused_build("mimic", root, tmp_path, r"both patients\.csv and patients\.csv\.gz exist.*file .*hosp")


# ---- 8. JSON that is not FHIR ------------------------------------------------------------------------------------

def case_8_json_that_is_not_a_resource(tmp_path):
    root = fhir(tmp_path)
    (root / "more_patients.json").write_text(json.dumps([{"id": "p7", "gender": "male"}]))
    refused_build("fhir", root, tmp_path, r"not a FHIR resource or Bundle.*more_patients\.json")


# ---- 9. real patients in reports ---------------------------------------------------------------------------------

def case_9_zero_shot_report_withholds_real_patients(tmp_path):
    from ehrjudge.judge.baseline import BaselineConfig, run_baseline
    from ehrjudge.judge.scoring import JudgeConfig
    from ehrjudge.judge.tiny import save_tiny_judge
    from ehrjudge.train.tiny import TINY_PROMPT, tiny_dataset

    # Setup: test = held-out real patients and an exact copy of a reference patient (generator noisy_copy)
    dataset = tiny_dataset(tmp_path / "dataset", n_train=16, n_eval=6)
    reference = pd.read_parquet(dataset / "reference" / "vectors.parquet")
    holdout = reference.tail(5).assign(subject_id=[f"h{i}" for i in range(5)])
    holdout[["age"]] = holdout[["age"]] + 1.0
    holdout.to_parquet(dataset / "holdout" / "vectors.parquet", index=False)
    shutil.copy(dataset / "reference" / "schema.json", dataset / "holdout" / "schema.json")
    real = pd.concat([holdout.drop(columns="subject_id").assign(generator="holdout_real"),
                      reference.head(1).drop(columns="subject_id").assign(generator="noisy_copy")])
    real.insert(0, "record_id", [f"holdout_real-0-0-{i}" for i in range(len(real))])
    real["strength"], real["realism_score"] = 0.0, [1, 1, 1, 10, 10, 10]  # largest gaps: all real
    real.to_parquet(dataset / "test.parquet", index=False)
    model = save_tiny_judge(tmp_path / "tiny", seed=0)
    config = BaselineConfig(split="test", n_bootstrap=20, regressor="ridge", n_disagreements=6,
                            judge=JudgeConfig(model=str(model), prompt=TINY_PROMPT, batch_size=8))
    # Run
    report = run_baseline(dataset, tmp_path / "baseline", config)
    # Assert: listed by record_id and scores, never by their contents
    rows = report["largest_disagreements"]
    assert len(rows) == 6 and all(row["record_text"].startswith("(record text withheld") for row in rows)
    markdown = (tmp_path / "baseline" / "report.md").read_text()
    assert "holdout_real-0-0-0" in markdown and "Demographics:" not in markdown


def case_9_html_disagreements_withhold_real_patients(tmp_path):
    from ehrjudge.pipeline.report import _disagreements

    frame = pd.DataFrame({"record_id": ["a", "b"], "generator": ["holdout_real", "noisy_copy"],
                          "realism_score": [10, 10], "trained_score": [1, 2],
                          "summary": ["Demographics: male, age 61", "Demographics: female, age 40"]})
    page = _disagreements(frame)
    assert "age 61" not in page and "withheld" in page and "age 40" in page


# ---- 10. no row contents in error messages -----------------------------------------------------------------------

def case_10_malformed_row_not_echoed(tmp_path):
    root = mimic(tmp_path)
    edit(root / "hosp" / "diagnoses_icd.csv", "10000001,20000001,2,I10,10", "10000001,20000001,2,I10,10,extra")
    message = refused_build("mimic", root, tmp_path, r"malformed row.*diagnoses_icd\.csv.*row line 3")
    assert "20000001" not in message and "extra" not in message


# ---- 11. temporary files -----------------------------------------------------------------------------------------

SLOW_BUILD = textwrap.dedent("""
    import sys, time
    import ehrjudge.cohort.build as build
    from ehrjudge.cli import main

    def slow(*args, **kwargs):
        print("featurizing", flush=True)
        time.sleep(120)

    build.featurize = slow
    sys.argv = ["ehrjudge", "cohort", "--source", "mimic", "--path", sys.argv[1], "--out", sys.argv[2],
                "--min-patients", "1"]
    main()
""")


def killed_build(tmp_path: Path, sig: int) -> Path:
    """Start `ehrjudge cohort`, kill it with `sig` while it works inside its temporary folder; return --out."""
    out = tmp_path / "cohorts" / "keep"
    process = subprocess.Popen([sys.executable, "-c", SLOW_BUILD, str(FIXTURES / "mimic"), str(out)],
                               stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    assert process.stdout.readline().strip() == "featurizing"
    assert list(out.parent.glob(".keep.tmp-*"))  # it holds a copy of the raw tables there
    process.send_signal(sig)
    process.wait(timeout=60)
    return out


def case_11_sigterm_removes_temporary_folder(tmp_path):
    out = killed_build(tmp_path, signal.SIGTERM)
    assert not out.exists() and list(out.parent.iterdir()) == []


def case_11_next_run_removes_what_sigkill_left(tmp_path):
    out = killed_build(tmp_path, signal.SIGKILL)
    assert list(out.parent.glob(".keep.tmp-*"))
    build_cohort("mimic", out, path=FIXTURES / "mimic", patients=None, config=ALL_CODES)
    assert [p.name for p in out.parent.iterdir()] == ["keep"]


def case_11_stale_score_temp_file_removed(tmp_path):
    paths = scoring_inputs(tmp_path)
    out = tmp_path / "scores.csv"
    stale = tmp_path / f".scores.csv.tmp-{dead_pid()}-x1y2"
    live = tmp_path / f".scores.csv.tmp-{os.getppid()}-a1b2"  # a running process's: left alone
    stale.write_text("half")
    live.write_text("busy")
    assert cli(*score_args(paths, write_records(tmp_path, paths["records"]), out)).exit_code == 0
    assert not stale.exists() and live.exists()


# ---- 12. corrupt or truncated compressed files -------------------------------------------------------------------

def case_12_truncated_csv_gz(tmp_path):
    root = mimic(tmp_path)
    labs = root / "hosp" / "labevents.csv"
    data = gzip.compress(labs.read_bytes())
    labs.unlink()
    (root / "hosp" / "labevents.csv.gz").write_bytes(data[:len(data) // 2])
    refused_build("mimic", root, tmp_path, r"cannot read the file \(truncated or corrupt\?\).*labevents\.csv\.gz")


def case_12_corrupt_csv_gz(tmp_path):
    root = mimic(tmp_path)
    labs = root / "hosp" / "labevents.csv"
    data = gzip.compress(labs.read_bytes())
    labs.unlink()
    (root / "hosp" / "labevents.csv.gz").write_bytes(data[:30] + b"\x00garbage" * 50 + data[-20:])
    refused_build("mimic", root, tmp_path, r"cannot read the file \(truncated or corrupt\?\).*labevents\.csv\.gz")


def case_12_truncated_ndjson_gz(tmp_path):
    root = fhir(tmp_path)
    observations = root / "Observation.ndjson"
    data = gzip.compress(observations.read_bytes())
    observations.unlink()
    (root / "Observation.ndjson.gz").write_bytes(data[:len(data) // 2])
    refused_build("fhir", root, tmp_path, r"cannot read the file \(truncated or corrupt\?\).*Observation\.ndjson\.gz")


# ---- 13. non-UTF-8 FHIR ------------------------------------------------------------------------------------------

def case_13_non_utf8_ndjson(tmp_path):
    root = fhir(tmp_path)
    conditions = root / "Condition.ndjson"
    lines = conditions.read_bytes().split(b"\n")
    lines[1] = lines[1].replace(b"diabetes", b"diab\xe9tes", 1)
    conditions.write_bytes(b"\n".join(lines))
    refused_build("fhir", root, tmp_path, r"not UTF-8 text.*Condition\.ndjson, row line 2")


def case_13_non_utf8_bundle_json(tmp_path):
    root = tmp_path / "bundles"
    shutil.copytree(FIXTURES / "fhir" / "bundles", root)
    bundle = root / "p2.json"
    bundle.write_bytes(bundle.read_bytes().replace(b'"Patient"', b'"Pati\xe9nt"', 1))
    refused_build("fhir", root, tmp_path, r"not UTF-8 text.*p2\.json, row line \d+")


# ---- 14. unusable --out ------------------------------------------------------------------------------------------

def case_14_score_out_is_a_directory(tmp_path):
    paths = scoring_inputs(tmp_path)
    (tmp_path / "scores").mkdir()
    refused_cli(score_args(paths, write_records(tmp_path, paths["records"]), tmp_path / "scores"),
                r"output file is a directory.*scores", tmp_path / "scores")


def case_14_score_out_under_a_file(tmp_path):
    paths = scoring_inputs(tmp_path)
    (tmp_path / "file.txt").write_text("x")
    out = tmp_path / "file.txt" / "scores.csv"
    refused_cli(score_args(paths, write_records(tmp_path, paths["records"]), out), r"is not a directory", out)


def case_14_score_out_read_only(tmp_path):
    paths = scoring_inputs(tmp_path)
    out = Path("/proc/scores.csv")  # read-only even for root, unlike a chmod'ed folder
    refused_cli(score_args(paths, write_records(tmp_path, paths["records"]), out), r"cannot write the output file",
                out)


def case_14_judge_out_checked_before_the_model_loads(tmp_path):
    paths = scoring_inputs(tmp_path)
    (tmp_path / "judged").mkdir()
    refused_cli(["judge", "--reference", paths["reference"], "--synthetic", write_records(tmp_path, paths["records"]),
                 "--out", tmp_path / "judged", "--model", tmp_path / "no-such-model"],
                r"output file is a directory", tmp_path / "judged")


# ---- 15. unclear CSV messages ------------------------------------------------------------------------------------

def case_15_non_utf8_byte_in_a_data_row(tmp_path):
    root = mimic(tmp_path)
    prescriptions = root / "hosp" / "prescriptions.csv"
    prescriptions.write_bytes(prescriptions.read_bytes().replace(b"Heparin", b"Hep\xffarin", 1))
    message = refused_build("mimic", root, tmp_path, r"not UTF-8 text.*prescriptions\.csv, row line 5")
    assert "header" not in message


def case_15_byte_order_mark_is_stripped(tmp_path):
    root = mimic(tmp_path)
    patients = root / "hosp" / "patients.csv"
    patients.write_bytes(b"\xef\xbb\xbf" + patients.read_bytes())
    assert list(build("mimic", root, tmp_path).vectors["subject_id"]) == ["10000001", "10000002", "10000003"]
    paths = scoring_inputs(tmp_path / "score")
    synthetic = write_records(tmp_path, paths["records"])
    synthetic.write_bytes(b"\xef\xbb\xbf" + synthetic.read_bytes())
    assert cli(*score_args(paths, synthetic, tmp_path / "scores.csv")).exit_code == 0


def case_15_semicolon_separated(tmp_path):
    root = mimic(tmp_path)
    patients = root / "hosp" / "patients.csv"
    patients.write_text(patients.read_text().replace(",", ";"))
    refused_build("mimic", root, tmp_path, r"not a comma-separated file.*patients\.csv")
    paths = scoring_inputs(tmp_path / "score")
    synthetic = tmp_path / "synthetic.csv"
    paths["records"].to_csv(synthetic, index=False, sep=";")
    refused_cli(score_args(paths, synthetic, tmp_path / "scores.csv"), r"not a comma-separated file.*synthetic\.csv",
                tmp_path / "scores.csv")


# ---- 16. errors that name their file -----------------------------------------------------------------------------

def case_16_yaml_config_error_names_the_file(tmp_path):
    paths = scoring_inputs(tmp_path)
    config = tmp_path / "score.yaml"
    config.write_text("k: 0\n")
    refused_cli(score_args(paths, write_records(tmp_path, paths["records"]), tmp_path / "scores.csv",
                           "--config", config), r"score\.yaml: ScoreConfig: k must be >= 1", tmp_path / "scores.csv")


def case_16_too_small_reference_names_its_folder(tmp_path):
    paths = scoring_inputs(tmp_path)
    small = tmp_path / "small"
    small.mkdir()
    Cohort(vectors(1, 4, "subject_id"), Schema(FEATURES, source="test")).save(small)
    message = refused_cli(["score", "--reference", small, "--synthetic", write_records(tmp_path, paths["records"]),
                           "--out", tmp_path / "scores.csv"], r"reference has 1 record\(s\).*file .*small",
                          tmp_path / "scores.csv")
    assert "after holding out" not in message


def case_16_holdout_of_another_schema_names_its_folder(tmp_path):
    paths = scoring_inputs(tmp_path)
    other = tmp_path / "other"
    other.mkdir()
    frame = vectors(30, 5, "subject_id").rename(columns={"labs_glucose": "labs_sodium"})
    Cohort(frame, Schema(FEATURES[:-1] + [dataclass_replace(FEATURES[-1], name="labs_sodium")], "test")).save(other)
    refused_cli(score_args(paths, write_records(tmp_path, paths["records"]), tmp_path / "scores.csv",
                           "--holdout", other), r"schema mismatch.*file .*other, column 'labs_sodium'",
                tmp_path / "scores.csv")


def dataclass_replace(spec, **changes):
    import dataclasses

    return dataclasses.replace(spec, **changes)


def case_16_unknown_code_names_the_events_file(tmp_path):
    root = mimic(tmp_path)
    edit(root / "hosp" / "diagnoses_icd.csv", "I10,10", "X999,10")
    refused_build("mimic", root, tmp_path, r"unknown code 'ICD10:X999'.*file .*diagnoses_icd\.csv, column 'icd_code'")


def case_16_values_shown_plainly(tmp_path):
    paths = scoring_inputs(tmp_path)
    frame = paths["records"]
    frame.loc[3, "age"] = np.nan
    message = refused_cli(score_args(paths, write_records(tmp_path, frame, "synthetic.parquet"),
                                     tmp_path / "scores.csv"), r"value nan is not a finite number",
                          tmp_path / "scores.csv")
    assert "np.float64" not in message


def case_16_flag_without_a_value(tmp_path):
    paths = scoring_inputs(tmp_path)
    out = tmp_path / "scores.csv"
    done = subprocess.run([sys.executable, "-m", "ehrjudge.cli.__main__", *map(str, score_args(
        paths, write_records(tmp_path, paths["records"]), out, "--k"))], capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and "--k was given without a value" in done.stderr, done.stderr
    assert not out.exists()


# ---- cases that already got a clean error ------------------------------------------------------------------------

def kept_bulk_manifest_is_skipped(tmp_path):
    # Handling: a bulk-export manifest (an `output` list, no resourceType) is skipped, with a warning
    root = fhir(tmp_path)
    (root / "manifest.json").write_text(json.dumps({"transactionTime": "2024", "output": []}))
    assert len(build("fhir", root, tmp_path)) == 3


def kept_missing_table(tmp_path):
    root = mimic(tmp_path)
    (root / "hosp" / "labevents.csv").unlink()
    refused_build("mimic", root, tmp_path, r"required MIMIC-IV table 'labevents' not found")


def kept_missing_column(tmp_path):
    root = mimic(tmp_path)
    pd.read_csv(root / "hosp" / "labevents.csv").drop(columns=["valuenum"]).to_csv(root / "hosp" / "labevents.csv",
                                                                                   index=False)
    refused_build("mimic", root, tmp_path, r"required column missing.*labevents\.csv, column 'valuenum'")


def kept_unparsable_date(tmp_path):
    root = mimic(tmp_path)
    edit(root / "hosp" / "admissions.csv", "2150-06-05 12:00:00", "June 5th")
    refused_build("mimic", root, tmp_path, r"unparsable date/time.*admissions\.csv, column 'dischtime', row line 3")


def kept_nan_lab_value(tmp_path):
    root = mimic(tmp_path)
    edit(root / "hosp" / "labevents.csv", "1.2,1.2,mg/dL", "1.2,NaN,mg/dL")
    refused_build("mimic", root, tmp_path, r"not a finite number.*labevents\.csv, column 'valuenum'")


def kept_unknown_gender(tmp_path):
    root = mimic(tmp_path)
    edit(root / "hosp" / "patients.csv", "10000003,M", "10000003,X")
    refused_build("mimic", root, tmp_path, r"unknown gender code 'X'.*patients\.csv, column 'gender'")


def kept_duplicate_patient(tmp_path):
    root = mimic(tmp_path)
    patients = root / "hosp" / "patients.csv"
    patients.write_text(patients.read_text() + "10000003,M,80,2170,2017 - 2019,\n")
    refused_build("mimic", root, tmp_path, r"duplicate patient id '10000003'")


def kept_fhir_malformed_json(tmp_path):
    root = fhir(tmp_path)
    (root / "Observation.ndjson").write_text((root / "Observation.ndjson").read_text() + "{not json\n")
    refused_build("fhir", root, tmp_path, r"malformed JSON.*Observation\.ndjson, row line 7")


def kept_synthetic_missing_column(tmp_path):
    paths = scoring_inputs(tmp_path)
    synthetic = write_records(tmp_path, paths["records"].drop(columns=["labs_glucose"]))
    refused_cli(score_args(paths, synthetic, tmp_path / "scores.csv"), r"schema mismatch.*column 'labs_glucose'",
                tmp_path / "scores.csv")


def kept_empty_synthetic_file(tmp_path):
    paths = scoring_inputs(tmp_path)
    synthetic = write_records(tmp_path, paths["records"].iloc[:0])
    refused_cli(score_args(paths, synthetic, tmp_path / "scores.csv"), r"no rows", tmp_path / "scores.csv")


def kept_unknown_setting(tmp_path):
    paths = scoring_inputs(tmp_path)
    with pytest.raises(ConfigError, match="unknown config key 'kk'"):
        result = cli(*score_args(paths, write_records(tmp_path, paths["records"]), tmp_path / "s.csv", "--kk", "3"))
        raise result.exception


CASES = {name.removeprefix("case_").replace("_", "-", 1): function for name, function in sorted(globals().items())
         if name.startswith("case_")}
CASES = {("issue20-" + name): function for name, function in CASES.items()}
CASES.update({name.replace("_", "-", 1): function for name, function in globals().items() if name.startswith("kept_")})


@pytest.mark.parametrize("case", list(CASES))
def test_hostile_input(case, tmp_path, request):
    function = CASES[case]
    if "caplog" in function.__code__.co_varnames[:function.__code__.co_argcount]:
        function(tmp_path, request.getfixturevalue("caplog"))
    else:
        function(tmp_path)
