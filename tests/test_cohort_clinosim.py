"""The built-in default: run the real clinosim simulator on a small cohort (N=60), cache it, re-load its raw CSVs."""

import time

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from ehrjudge.cli import app
from ehrjudge.cohort.build import build_cohort, default_cohort
from ehrjudge.cohort.clinosim import simulate
from ehrjudge.cohort.schema import GROUPS, Cohort

N, SEED = 60, 7


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    root = tmp_path_factory.mktemp("cache")
    patch = pytest.MonkeyPatch()
    patch.setenv("EHRJUDGE_CACHE", str(root))
    started = time.perf_counter()
    path = default_cohort(patients=N, seed=SEED)
    yield root, path, time.perf_counter() - started
    patch.undo()


def test_default_cohort_has_n_patients_and_valid_vectors(cache):
    # Setup
    root, path, _ = cache
    # Run
    cohort = Cohort.load(path)
    # Assert
    assert path == root / "cohorts" / f"clinosim-n{N}-s{SEED}"
    assert len(cohort) == N
    ids = cohort.vectors["subject_id"].tolist()
    assert ids == sorted(ids) and len(set(ids)) == N
    matrix = cohort.matrix()
    assert matrix.dtype == np.float64 and np.isfinite(matrix).all()
    assert set(np.unique(cohort.vectors["gender"])) <= {0.0, 1.0}
    assert cohort.schema.names[:3] == ["gender", "age", "is_dead"]
    assert {f.group for f in cohort.schema.features} <= set(GROUPS)
    assert any(f.name.startswith("dx_icd10_") for f in cohort.schema.features)
    assert (cohort.vectors["admissions_count"] > 0).all()  # every kept patient has records
    assert (path / "raw" / "csv" / "lab_results.csv").exists()


def test_second_call_is_cached(cache):
    # Setup
    _, path, _ = cache
    # Run
    started = time.perf_counter()
    again = default_cohort(patients=N, seed=SEED)
    # Assert
    assert again == path and time.perf_counter() - started < 1.0


def test_rebuilding_from_raw_csvs_is_identical(cache, tmp_path):
    # Setup
    _, path, _ = cache
    original = Cohort.load(path)
    # Run
    rebuilt = build_cohort("clinosim", tmp_path / "again", path=path / "raw", patients=N)
    # Assert
    assert rebuilt.schema.names == original.schema.names
    pd.testing.assert_frame_equal(rebuilt.vectors, original.vectors)


def test_patients_csv_duplicates_are_collapsed(cache):
    # Setup
    _, path, _ = cache
    raw = pd.read_csv(path / "raw" / "csv" / "patients.csv")
    cohort = Cohort.load(path)
    # Run
    first = raw.drop_duplicates("patient_id").set_index("patient_id").loc[cohort.vectors["subject_id"]]
    # Assert
    assert raw["patient_id"].duplicated().any()  # the simulator repeats rows per encounter
    assert cohort.vectors["age"].tolist() == first["age"].astype(float).tolist()
    assert cohort.vectors["gender"].tolist() == (first["sex"] == "M").astype(float).tolist()


def test_cli_builds_from_an_existing_clinosim_output(cache, tmp_path):
    # Setup
    _, path, _ = cache
    # Run
    result = CliRunner().invoke(app, ["cohort", "--source", "clinosim", "--path", str(path / "raw"),
                                      "--patients", "10", "--out", str(tmp_path / "ten")])
    # Assert
    assert result.exit_code == 0, result.output
    assert len(Cohort.load(tmp_path / "ten")) == 10


def test_clinosim_fhir_export_loads_like_its_csv(tmp_path):
    # Setup: one simulator run writing both formats
    simulate(60, 3, tmp_path / "sim", formats=("csv", "fhir"))
    # Run
    from_csv = build_cohort("clinosim", tmp_path / "csv", path=tmp_path / "sim", patients=None)
    from_fhir = build_cohort("fhir", tmp_path / "fhir", path=tmp_path / "sim" / "fhir_r4", patients=None)
    # Assert: same people (ids differ between the exports) and sex split; the CSV export flags only deaths
    # during an encounter (diagnoses.deceased), FHIR's Patient.deceasedDateTime also deaths at home
    assert len(from_fhir) == len(from_csv) > 0
    assert from_fhir.vectors["gender"].sum() == from_csv.vectors["gender"].sum()
    assert from_fhir.vectors["is_dead"].sum() >= from_csv.vectors["is_dead"].sum()
    assert any(name.startswith("lab_loinc_") for name in from_fhir.schema.names)
    assert np.isfinite(from_fhir.matrix()).all()


def test_simulate_refuses_an_unknown_country_or_a_count_without_csv(tmp_path):
    # Run / Assert: both refused before the simulator starts
    from ehrjudge.cohort.clinosim import simulate_patients
    from ehrjudge.errors import InputError

    with pytest.raises(InputError, match="unknown clinosim country 'FR'"):
        simulate(10, 0, tmp_path / "sim", country="FR")
    with pytest.raises(InputError, match="counts patients in the csv output"):
        simulate_patients(10, 0, tmp_path, formats=("fhir",))
    assert not (tmp_path / "sim").exists()


def test_a_jp_simulation_exports_fhir_with_another_schema(tmp_path):
    # Setup: the JP simulator (legacy JLAC10 lab codes) against the US one, same size and seed
    us = build_cohort("fhir", tmp_path / "us", path=simulate(60, 3, tmp_path / "sim-us", formats=("csv", "fhir"))
                      .parent / "fhir_r4", patients=None)
    jp_csv = simulate(60, 3, tmp_path / "sim-jp", formats=("csv", "fhir"), country="JP")
    # Run: strict false, JP writes a newborn born after the cohort's last encounter
    from ehrjudge.cohort.featurize import FeatureConfig

    jp = build_cohort("fhir", tmp_path / "jp", path=jp_csv.parent / "fhir_r4", patients=None,
                      config=FeatureConfig(strict=False))
    # Assert: its own columns beyond the shared demographics
    assert len(jp) > 0 and np.isfinite(jp.matrix()).all()
    assert set(jp.schema.names) != set(us.schema.names)
    assert {"gender", "age", "is_dead"} <= set(jp.schema.names) & set(us.schema.names)
