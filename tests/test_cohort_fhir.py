"""FHIR R4 loader: bulk NDJSON and per-patient Bundles of the same 3 patients, against hand-computed vectors."""

import gzip
import shutil
from pathlib import Path

import pytest

from ehrjudge.cohort.build import build_cohort
from ehrjudge.cohort.featurize import FeatureConfig

FIXTURE = Path(__file__).parent / "fixtures" / "fhir"
ALL_CODES = FeatureConfig(min_patients=1)

# Worked by hand from tests/fixtures/fhir/ndjson/*.ndjson (bundles/ hold the same resources):
# p1: male, born 1957-03-15, last encounter 2024-03-01 -> age 66; stays 2.5 d and 1 d (std 0.75*sqrt(2));
#     Condition E11.9 x2, I10; Procedure SNOMED 80146002; Metformin 500, 1000 mg;
#     labs creatinine 1.1, 0.9, hemoglobin 13.5 (the heart-rate vital sign is not a lab).
# p2: female, born 1980-12-01, died 2024-05-20 -> age 43, is_dead 1; one 10-day stay; I10 and SNOMED 44054006;
#     Heparin 5000, Insulin without dose; creatinine 2.0 (no category -> lab), glucose without a value.
# p3: female, born 2000-06-30, no encounters -> age at the cohort's last encounter start (2024-05-10) = 23.
EXPECTED = {
    "gender": [1, 0, 0], "age": [66, 43, 23], "is_dead": [0, 1, 0],
    "admissions_count": [2, 1, 0], "admissions_los_mean": [1.75, 10, 0], "admissions_los_sum": [3.5, 10, 0],
    "admissions_los_max": [2.5, 10, 0], "admissions_los_min": [1, 10, 0], "admissions_los_std": [1.0606601718, 0, 0],
    "diagnoses_count": [3, 2, 0], "dx_icd10_i10": [1, 1, 0], "dx_icd10_e119": [2, 0, 0], "dx_sct_44054006": [0, 1, 0],
    "procedures_count": [1, 0, 0], "px_sct_80146002": [1, 0, 0],
    "prescriptions_count": [2, 2, 0], "prescriptions_mean": [750, 5000, 0], "prescriptions_sum": [1500, 5000, 0],
    "prescriptions_max": [1000, 5000, 0], "prescriptions_min": [500, 5000, 0],
    "prescriptions_std": [353.5533906, 0, 0],
    "rx_heparin": [0, 1, 0], "rx_insulin": [0, 1, 0], "rx_metformin": [2, 0, 0],
    "labs_count": [3, 2, 0], "labs_mean": [15.5 / 3, 2, 0], "labs_sum": [15.5, 2, 0], "labs_max": [13.5, 2, 0],
    "labs_min": [0.9, 2, 0], "labs_std": [7.2175711519, 0, 0],
    "lab_loinc_2160_0": [2, 1, 0], "lab_loinc_2345_7": [0, 1, 0], "lab_loinc_718_7": [1, 0, 0],
}


def assert_expected(cohort):
    assert cohort.schema.names == list(EXPECTED)
    assert list(cohort.vectors["subject_id"]) == ["p1", "p2", "p3"]
    for name, values in EXPECTED.items():
        assert cohort.vectors[name].to_numpy() == pytest.approx(values, rel=1e-9, abs=1e-9), name


def test_fhir_ndjson_matches_hand_computed(tmp_path):
    # Run
    cohort = build_cohort("fhir", tmp_path / "out", path=FIXTURE / "ndjson", patients=None, config=ALL_CODES)
    # Assert
    assert_expected(cohort)
    spec = cohort.schema.by_name()
    assert spec["dx_icd10_e119"].description == "Type 2 diabetes mellitus without complications"
    assert spec["lab_loinc_718_7"].description == "Hemoglobin [Mass/volume] in Blood"
    assert (tmp_path / "out" / "raw" / "Patient.ndjson").exists()


def test_fhir_bundles_give_the_same_vectors(tmp_path):
    cohort = build_cohort("fhir", tmp_path / "out", path=FIXTURE / "bundles", patients=None, config=ALL_CODES)
    assert_expected(cohort)


def test_fhir_gzipped_ndjson(tmp_path):
    # Setup
    folder = tmp_path / "bulk"
    folder.mkdir()
    for file in sorted((FIXTURE / "ndjson").glob("*.ndjson")):
        with gzip.open(folder / (file.name + ".gz"), "wt") as out:
            out.write(file.read_text())
    # Run
    cohort = build_cohort("fhir", tmp_path / "out", path=folder, patients=None, config=ALL_CODES)
    # Assert
    assert_expected(cohort)


def test_fhir_single_bundle_file(tmp_path):
    # Setup: a Bundle holding p1 only; the age then comes from p1's own last encounter
    shutil.copy(FIXTURE / "bundles" / "p1.json", tmp_path / "p1.json")
    # Run
    cohort = build_cohort("fhir", tmp_path / "out", path=tmp_path / "p1.json", patients=None, config=ALL_CODES)
    # Assert
    assert cohort.vectors["subject_id"].tolist() == ["p1"]
    assert cohort.vectors["age"].tolist() == [66]
    assert cohort.vectors["dx_icd10_e119"].tolist() == [2]
