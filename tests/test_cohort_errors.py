"""Bad input: each case raises InputError naming the file and column (or row); the CLI exits 2 and writes nothing."""

import json
import shutil
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from ehrjudge.cli import app
from ehrjudge.cohort.build import build_cohort
from ehrjudge.cohort.featurize import FeatureConfig
from ehrjudge.cohort.schema import FeatureSpec, Schema, load_records
from ehrjudge.errors import InputError

FIXTURES = Path(__file__).parent / "fixtures"
ALL_CODES = FeatureConfig(min_patients=1)


def mimic_copy(tmp_path: Path) -> Path:
    root = tmp_path / "mimic"
    shutil.copytree(FIXTURES / "mimic", root)
    return root


def edit(file: Path, old: str, new: str) -> None:
    text = file.read_text()
    assert old in text
    file.write_text(text.replace(old, new, 1))


def build_mimic(root: Path, tmp_path: Path, **kwargs):
    return build_cohort("mimic", tmp_path / "out", path=root, patients=None, config=ALL_CODES, **kwargs)


def test_missing_table(tmp_path):
    # Setup
    root = mimic_copy(tmp_path)
    (root / "hosp" / "labevents.csv").unlink()
    # Run / Assert
    with pytest.raises(InputError, match=r"required MIMIC-IV table 'labevents' not found.*file .*mimic"):
        build_mimic(root, tmp_path)
    assert not (tmp_path / "out").exists()


def test_missing_column(tmp_path):
    # Setup
    root = mimic_copy(tmp_path)
    frame = pd.read_csv(root / "hosp" / "labevents.csv").drop(columns=["valuenum"])
    frame.to_csv(root / "hosp" / "labevents.csv", index=False)
    # Run / Assert
    with pytest.raises(InputError, match=r"required column missing.*labevents\.csv, column 'valuenum'"):
        build_mimic(root, tmp_path)


def test_malformed_row(tmp_path):
    # Setup: a row with one field too many
    root = mimic_copy(tmp_path)
    edit(root / "hosp" / "diagnoses_icd.csv", "10000001,20000001,2,I10,10", "10000001,20000001,2,I10,10,extra")
    # Run / Assert
    with pytest.raises(InputError, match=r"malformed row.*diagnoses_icd\.csv.*row line 3"):
        build_mimic(root, tmp_path)


def test_unparsable_date(tmp_path):
    # Setup
    root = mimic_copy(tmp_path)
    edit(root / "hosp" / "admissions.csv", "2150-06-05 12:00:00", "June 5th")
    # Run / Assert
    with pytest.raises(InputError, match=r"unparsable date/time value \"June 5th\".*admissions\.csv, "
                                         r"column 'dischtime', row line 3"):
        build_mimic(root, tmp_path)


def test_non_numeric_and_nan_and_inf_values(tmp_path):
    # Setup
    root = mimic_copy(tmp_path)
    labs = root / "hosp" / "labevents.csv"
    original = labs.read_text()
    # Run / Assert: text in a numeric column is located by line
    edit(labs, "1.2,1.2,mg/dL", "1.2,high,mg/dL")
    with pytest.raises(InputError, match=r"unparsable double value \"high\".*column 'valuenum', row line 3"):
        build_mimic(root, tmp_path)
    # NaN / inf parse as numbers, and are then caught with the patient they belong to
    for bad in ("NaN", "inf"):
        labs.write_text(original.replace("1.2,1.2,mg/dL", f"1.2,{bad},mg/dL"))
        with pytest.raises(InputError, match=r"not a finite number.*labevents\.csv, column 'valuenum', "
                                             r"row subject_id=10000001"):
            build_mimic(root, tmp_path)


def test_unknown_codes(tmp_path):
    # Setup
    root = mimic_copy(tmp_path)
    edit(root / "hosp" / "diagnoses_icd.csv", "10000001,20000001,2,I10,10", "10000001,20000001,2,I10,11")
    # Run / Assert: an ICD version that does not exist
    with pytest.raises(InputError, match=r"unknown ICD code/version.*diagnoses_icd\.csv, column 'icd_version'"):
        build_mimic(root, tmp_path)
    # A code missing from the source's own dictionary (strict by default, allowed when switched off)
    edit(root / "hosp" / "diagnoses_icd.csv", "I10,11", "X999,10")
    with pytest.raises(InputError, match=r"unknown code 'ICD10:X999' \(not in d_icd_diagnoses\.csv.*column 'icd_code'"):
        build_mimic(root, tmp_path)
    cohort = build_cohort("mimic", tmp_path / "out", path=root, patients=None,
                          config=FeatureConfig(min_patients=1, strict_codes=False))
    assert cohort.schema.by_name()["dx_icd10_x999"].description == "ICD10:X999"
    # An unknown gender code
    edit(root / "hosp" / "patients.csv", "10000003,M", "10000003,X")
    with pytest.raises(InputError, match=r"unknown gender code 'X'.*patients\.csv, column 'gender'"):
        build_mimic(root, tmp_path)


def test_empty_cohort(tmp_path):
    # Setup
    root = mimic_copy(tmp_path)
    patients = root / "hosp" / "patients.csv"
    patients.write_text(patients.read_text().splitlines()[0] + "\n")
    # Run / Assert
    with pytest.raises(InputError, match=r"empty cohort.*patients\.csv"):
        build_mimic(root, tmp_path)


def test_schema_mismatch_between_cohorts(tmp_path):
    # Setup
    reference = build_mimic(FIXTURES / "mimic", tmp_path)
    foreign = Schema(features=reference.schema.features + [FeatureSpec("bmi_mean", "vitals", "continuous", "BMI")])
    records = reference.vectors.drop(columns=["lab_50931"]).rename(columns={"subject_id": "record_id"})
    records.to_parquet(tmp_path / "records.parquet")
    # Run / Assert: a schema whose features this featurizer cannot compute
    with pytest.raises(InputError, match=r"schema mismatch: feature 'bmi_mean'"):
        build_cohort("mimic", tmp_path / "other", path=FIXTURES / "mimic", patients=None, schema=foreign)
    # Records whose columns differ from the schema
    with pytest.raises(InputError, match=r"schema mismatch: 1 schema column\(s\) missing.*records\.parquet"):
        load_records(tmp_path / "records.parquet", reference.schema)
    assert not (tmp_path / "other").exists()


def test_fhir_bad_inputs(tmp_path):
    # Setup
    folder = tmp_path / "fhir"
    shutil.copytree(FIXTURES / "fhir" / "ndjson", folder)
    observations = folder / "Observation.ndjson"
    original = observations.read_text()
    # Run / Assert: a malformed JSON line
    observations.write_text(original + "{not json\n")
    with pytest.raises(InputError, match=r"malformed JSON.*Observation\.ndjson, row line 7"):
        build_cohort("fhir", tmp_path / "out", path=folder, patients=None)
    # Infinity in a value
    observations.write_text(original.replace('"value": 13.5', '"value": Infinity'))
    with pytest.raises(InputError, match=r"not a finite number.*column 'Observation.valueQuantity.value', row line 4"):
        build_cohort("fhir", tmp_path / "out", path=folder, patients=None)
    observations.write_text(original)
    # An unparsable date and an unknown gender code
    encounters = folder / "Encounter.ndjson"
    good_encounters = encounters.read_text()
    encounters.write_text(good_encounters.replace("2024-03-02T00:00:00Z", "03/02/2024"))
    with pytest.raises(InputError, match=r"unparsable date/time '03/02/2024'.*"
                                         r"column 'Encounter.period.end', row line 2"):
        build_cohort("fhir", tmp_path / "out", path=folder, patients=None)
    encounters.write_text(good_encounters)
    patients = folder / "Patient.ndjson"
    patients.write_text(patients.read_text().replace('"gender": "female"', '"gender": "F"', 1))
    with pytest.raises(InputError, match=r"unknown gender code 'F'.*column 'Patient.gender', row line 2"):
        build_cohort("fhir", tmp_path / "out", path=folder, patients=None)
    assert not (tmp_path / "out").exists()


def test_fhir_without_patients(tmp_path):
    # Setup
    (tmp_path / "only.ndjson").write_text(json.dumps({"resourceType": "Condition", "id": "c",
                                                               "subject": {"reference": "Patient/p1"}}) + "\n")
    # Run / Assert
    with pytest.raises(InputError, match=r"no Patient resources found"):
        build_cohort("fhir", tmp_path / "out", path=tmp_path / "only.ndjson", patients=None)


def test_cli_exits_2_and_leaves_no_output(tmp_path):
    # Setup
    root = mimic_copy(tmp_path)
    edit(root / "hosp" / "admissions.csv", "2150-06-05 12:00:00", "not-a-date")
    out = tmp_path / "cohorts" / "bad"
    # Run
    result = CliRunner().invoke(app, ["cohort", "--source", "mimic", "--path", str(root), "--out", str(out)],
                                standalone_mode=False, catch_exceptions=True)
    # Assert: the CLI's main() maps EhrJudgeError to exit 2; under CliRunner the error surfaces as the exception
    assert isinstance(result.exception, InputError)
    assert "dischtime" in str(result.exception) and "admissions.csv" in str(result.exception)
    assert not out.exists() and list((tmp_path / "cohorts").iterdir()) == []


def test_cli_main_prints_error_and_exits_2(tmp_path):
    import subprocess
    import sys

    # Run
    done = subprocess.run([sys.executable, "-c", "from ehrjudge.cli import main; main()", "cohort", "--source",
                           "mimic", "--path", str(tmp_path / "nowhere"), "--out", str(tmp_path / "out")],
                          capture_output=True, text=True)
    # Assert
    assert done.returncode == 2
    assert done.stderr.strip().splitlines()[-1].startswith("error: source path not found (file ")
    assert not (tmp_path / "out").exists()


def test_duplicate_patient_id(tmp_path):
    # Setup
    root = mimic_copy(tmp_path)
    patients = root / "hosp" / "patients.csv"
    patients.write_text(patients.read_text() + "10000003,M,80,2170,2017 - 2019,\n")
    # Run / Assert
    with pytest.raises(InputError, match=r"duplicate patient id '10000003'.*patients\.csv, column 'subject_id'"):
        build_mimic(root, tmp_path)
