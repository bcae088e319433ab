"""MIMIC-IV loader on a 3-patient fixture in the exact MIMIC-IV 2.2 hosp/ schema, against hand-computed vectors."""

import gzip
import shutil
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from ehrjudge.cli import app
from ehrjudge.cohort.build import build_cohort
from ehrjudge.cohort.featurize import FeatureConfig
from ehrjudge.cohort.schema import Cohort

FIXTURE = Path(__file__).parent / "fixtures" / "mimic"
ALL_CODES = FeatureConfig(min_patients=1)

# Worked by hand from tests/fixtures/mimic/hosp/*.csv:
# 10000001: M, 67, alive; stays 2.5 d and 4.5 d (std = sqrt(2) = 1.41421); dx E119 x2, I10; px 0DTJ4ZZ;
#           Metformin 500, 1000 and Insulin "0-10" (no numeric dose: counted, not in the stats), std = 353.553;
#           labs creatinine 1.0, 1.2, hematocrit 40 (mean 42.2/3, std 22.45915).
# 10000002: F, 45, dod set; one 11-day stay with a 3.5-day ICU stay (icu/icustays.csv);
#           dx 4019 (ICD-9), I10; px 3893 (ICD-9) x2; Heparin 5000;
#           creatinine 2.0 and a glucose row without valuenum (counted, not in the stats).
# 10000003: M, 80, no admissions; one hematocrit 35.
# Code columns: most patients first, then code text ("ICD10:..." sorts before "ICD9:...").
EXPECTED = {
    "gender": [1, 0, 1], "age": [67, 45, 80], "is_dead": [0, 1, 0],
    "admissions_count": [2, 1, 0], "admissions_los_mean": [3.5, 11, 0], "admissions_los_sum": [7, 11, 0],
    "admissions_los_max": [4.5, 11, 0], "admissions_los_min": [2.5, 11, 0],
    "admissions_los_std": [1.4142135624, 0, 0],
    "icustays_count": [0, 1, 0], "icustays_los_mean": [0, 3.5, 0], "icustays_los_sum": [0, 3.5, 0],
    "icustays_los_max": [0, 3.5, 0], "icustays_los_min": [0, 3.5, 0], "icustays_los_std": [0, 0, 0],
    "diagnoses_count": [3, 2, 0], "dx_icd10_i10": [1, 1, 0], "dx_icd10_e119": [2, 0, 0], "dx_icd9_4019": [0, 1, 0],
    "procedures_count": [1, 2, 0], "px_icd10_0dtj4zz": [1, 0, 0], "px_icd9_3893": [0, 2, 0],
    "prescriptions_count": [3, 1, 0], "prescriptions_mean": [750, 5000, 0], "prescriptions_sum": [1500, 5000, 0],
    "prescriptions_max": [1000, 5000, 0], "prescriptions_min": [500, 5000, 0],
    "prescriptions_std": [353.5533906, 0, 0],
    "rx_heparin": [0, 1, 0], "rx_insulin": [1, 0, 0], "rx_metformin": [2, 0, 0],
    "labs_count": [3, 2, 1], "labs_mean": [42.2 / 3, 2, 35], "labs_sum": [42.2, 2, 35], "labs_max": [40, 2, 35],
    "labs_min": [1, 2, 35], "labs_std": [22.4591480990, 0, 0],
    "lab_50912": [2, 1, 0], "lab_51221": [1, 0, 1], "lab_50931": [0, 1, 0],
}


def copy_fixture(tmp_path: Path) -> Path:
    root = tmp_path / "mimic"
    shutil.copytree(FIXTURE, root)
    return root


def test_mimic_vectors_match_hand_computed(tmp_path):
    # Run
    cohort = build_cohort("mimic", tmp_path / "out", path=FIXTURE, patients=None, config=ALL_CODES)
    # Assert
    assert cohort.schema.names == list(EXPECTED)
    assert list(cohort.vectors["subject_id"]) == ["10000001", "10000002", "10000003"]
    for name, values in EXPECTED.items():
        assert cohort.vectors[name].to_numpy() == pytest.approx(values, rel=1e-9, abs=1e-9), name
    assert cohort.matrix().dtype == np.float64 and np.isfinite(cohort.matrix()).all()
    spec = cohort.schema.by_name()
    assert spec["dx_icd10_e119"].description == "Type 2 diabetes mellitus without complications"
    assert spec["dx_icd10_e119"].code == "ICD10:E119" and spec["dx_icd10_e119"].kind == "count"
    assert spec["lab_50912"].description == "Creatinine, Blood"
    assert spec["gender"].kind == "binary" and spec["age"].kind == "continuous"


def test_mimic_written_dir_round_trips_and_keeps_raw(tmp_path):
    # Run
    build_cohort("mimic", tmp_path / "out", path=FIXTURE, patients=None, config=ALL_CODES)
    loaded = Cohort.load(tmp_path / "out")
    # Assert
    assert loaded.vectors.shape == (3, 1 + len(EXPECTED))
    assert (tmp_path / "out" / "raw" / "hosp" / "labevents.csv").read_text() == \
        (FIXTURE / "hosp" / "labevents.csv").read_text()
    assert (tmp_path / "out" / "raw" / "manifest.json").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]  # no temp dirs left


def test_mimic_gzip_and_v1_core_layout_give_same_vectors(tmp_path):
    # Setup: every table gzipped, patients/admissions moved to core/ as in MIMIC-IV 1.0
    root = copy_fixture(tmp_path)
    (root / "core").mkdir()
    for csv in sorted((root / "hosp").glob("*.csv")):
        target = (root / "core" if csv.stem in ("patients", "admissions") else root / "hosp") / (csv.name + ".gz")
        with open(csv, "rb") as src, gzip.open(target, "wb") as dst:
            dst.write(src.read())
        csv.unlink()
    # Run
    cohort = build_cohort("mimic", tmp_path / "out", path=root, patients=None, config=ALL_CODES)
    # Assert
    for name, values in EXPECTED.items():
        assert cohort.vectors[name].to_numpy() == pytest.approx(values, rel=1e-9, abs=1e-9), name


def test_top_k_and_min_patients_select_code_columns(tmp_path):
    # Run
    config = FeatureConfig(dx_top_k=1, px_top_k=0, min_patients=2)
    cohort = build_cohort("mimic", tmp_path / "out", path=FIXTURE, patients=None, config=config)
    # Assert: only I10 (2 patients) among diagnoses; no px columns; labs 50912 and 51221 have 2 patients each
    codes = [f.name for f in cohort.schema.features if f.code is not None]
    assert codes == ["dx_icd10_i10", "lab_50912", "lab_51221"]


def test_patients_limit_keeps_first_ids(tmp_path):
    cohort = build_cohort("mimic", tmp_path / "out", path=FIXTURE, patients=2, config=ALL_CODES)
    assert list(cohort.vectors["subject_id"]) == ["10000001", "10000002"]
    assert cohort.vectors["labs_count"].tolist() == [3, 2]


def test_reapplied_schema_gives_exactly_its_columns(tmp_path):
    # Setup: a second cohort without E119 and with a new code (Z00) for patient 10000003
    reference = build_cohort("mimic", tmp_path / "ref", path=FIXTURE, patients=None, config=ALL_CODES)
    other = copy_fixture(tmp_path)
    dx = other / "hosp" / "diagnoses_icd.csv"
    lines = [ln for ln in dx.read_text().splitlines() if ",E119," not in ln] + ["10000003,20000009,1,Z00,10"]
    dx.write_text("\n".join(lines) + "\n")
    d_dx = other / "hosp" / "d_icd_diagnoses.csv"
    d_dx.write_text(d_dx.read_text() + "Z00,10,Encounter for general examination\n")
    # Run
    applied = build_cohort("mimic", tmp_path / "other", path=other, patients=None, schema=reference.schema)
    # Assert
    assert applied.schema.names == reference.schema.names
    assert applied.vectors["dx_icd10_e119"].tolist() == [0, 0, 0]  # absent code -> 0
    assert applied.vectors["diagnoses_count"].tolist() == [1, 2, 1]  # Z00 counted in the total, no column
    assert not any("z00" in name for name in applied.schema.names)


def test_cli_cohort_and_show_on_mimic(tmp_path):
    # Run
    runner = CliRunner()
    built = runner.invoke(app, ["cohort", "--source", "mimic", "--path", str(FIXTURE), "--out", str(tmp_path / "c"),
                                "--min-patients", "1"])
    shown = runner.invoke(app, ["show", "--cohort", str(tmp_path / "c"), "--record", "10000002", "--format", "csv"])
    # Assert
    assert built.exit_code == 0, built.output
    assert "3 patients x 40 features" in built.output
    header, values = shown.output.strip().splitlines()
    assert header.startswith("SubjectID,Gender,Age,IsDead,Admissions_count,Admissions_los_mean")
    assert values.startswith("10000002,0,45,1,1,11,")
    assert "ICU stays: 1 (length of stay mean 3.5 d" in runner.invoke(
        app, ["show", "--cohort", str(tmp_path / "c"), "--record", "10000002"]).output


def test_cli_schema_from_reapplies_columns(tmp_path):
    # Setup: a reference with every code, then the same data with a stricter config but the reference's schema
    runner = CliRunner()
    runner.invoke(app, ["cohort", "--source", "mimic", "--path", str(FIXTURE), "--out", str(tmp_path / "ref"),
                        "--min-patients", "1"])
    # Run
    result = runner.invoke(app, ["cohort", "--source", "mimic", "--path", str(FIXTURE), "--patients", "1",
                                 "--out", str(tmp_path / "one"), "--schema-from", str(tmp_path / "ref"),
                                 "--min-patients", "3"])
    # Assert
    assert result.exit_code == 0, result.output
    one = Cohort.load(tmp_path / "one")
    assert one.schema.names == list(EXPECTED)
    assert one.matrix()[0] == pytest.approx([values[0] for values in EXPECTED.values()], rel=1e-9)
