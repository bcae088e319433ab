"""Bad input to `ehrjudge run` and `ehrjudge gate`: a located error, exit code 2, nothing written."""

import subprocess
import sys

import pandas as pd

from ehrjudge.cohort.schema import Cohort, FeatureSpec, Schema


def cli(*args, cwd):
    return subprocess.run([sys.executable, "-m", "ehrjudge.cli.__main__", *args], cwd=cwd,
                          capture_output=True, text=True, timeout=300)


def test_run_rejects_unknown_stage_profile_and_setting(tmp_path):
    stage = cli("run", "--out", str(tmp_path / "run"), "--until", "bogus", cwd=tmp_path)
    profile = cli("run", "--out", str(tmp_path / "run2"), "--profile", "huge", cwd=tmp_path)
    setting = cli("run", "--out", str(tmp_path / "run3"), "--train.learning-rat", "1", cwd=tmp_path)
    assert stage.returncode == 2 and "unknown stage(s) ['bogus']" in stage.stderr
    assert profile.returncode == 2 and "unknown profile 'huge'" in profile.stderr
    assert setting.returncode == 2 and "unknown config key 'train.learning_rat'" in setting.stderr
    assert not (tmp_path / "run2").exists() and not (tmp_path / "run3").exists()


def test_gate_names_the_file_and_column_of_a_mismatched_synthetic_set(tmp_path):
    # Setup: a 3-column reference and a synthetic file missing one of its columns
    schema = Schema([FeatureSpec("age", "demographics", "continuous", "age"),
                     FeatureSpec("dx_E11", "diagnoses", "count", "diabetes"),
                     FeatureSpec("lab_K", "labs", "count", "potassium")], source="test")
    vectors = pd.DataFrame({"subject_id": ["a", "b", "c"], "age": [50.0, 60, 70], "dx_E11": [0.0, 1, 2],
                            "lab_K": [1.0, 2, 3]})
    Cohort(vectors, schema).save(tmp_path)
    bad = tmp_path / "bad.parquet"
    pd.DataFrame({"record_id": ["x"], "age": [55.0], "dx_E11": [1.0]}).to_parquet(bad)
    # Run
    result = cli("gate", "--judge", str(tmp_path), "--synthetic", str(bad), "--name", "gen",
                 "--reference", str(tmp_path), "--registry-dir", str(tmp_path / "registry"), cwd=tmp_path)
    # Assert
    assert result.returncode == 2
    assert "schema mismatch" in result.stderr and "bad.parquet" in result.stderr and "'lab_K'" in result.stderr
    assert not (tmp_path / "registry").exists()
