"""Bad input to `ehrjudge run` and `ehrjudge gate`: a located error, exit code 2, nothing written."""

import subprocess
import sys

import pandas as pd
import pytest

from ehrjudge.cohort.schema import Cohort, FeatureSpec, Schema
from ehrjudge.errors import InputError


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


def test_evaluation_stage_names_the_zero_shot_file_that_judged_no_record(tmp_path):
    # Setup: a judge dataset, and zero-shot scores that hold none of its test records
    from ehrjudge.pipeline.config import RunConfig
    from ehrjudge.pipeline.run import build_evaluation_stage
    from ehrjudge.train.tiny import tiny_dataset

    dataset = tiny_dataset(tmp_path / "dataset")
    zero_shot = tmp_path / "zero_shot"
    for split in ("test", "test_unseen"):
        (zero_shot / split).mkdir(parents=True)
        pd.DataFrame({"record_id": ["nobody"], "judge_score": [5], "expected_score": [5.0],
                      "regressor_score": [5]}).to_csv(zero_shot / split / "judge_scores.csv", index=False)
    # Run / Assert: refused before any judge is loaded (there is none in the judge folder)
    with pytest.raises(InputError, match="no test record was judged by the zero-shot stage") as error:
        build_evaluation_stage(RunConfig(), dataset, zero_shot, tmp_path / "no-judge", tmp_path / "out")
    assert str(zero_shot / "test" / "judge_scores.csv") in str(error.value)
