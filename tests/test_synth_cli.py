"""`ehrjudge synth` and `ehrjudge dataset`: real command runs, outputs, histogram table and located errors."""

import json

import pandas as pd
from typer.testing import CliRunner

import ehrjudge.cli.synth  # noqa: F401 - registers the commands on `app`
from ehrjudge.cli.app import app
from ehrjudge.cohort.schema import Cohort, load_records
from ehrjudge.errors import ConfigError, InputError
from ehrjudge.synth.toy import toy_cohort


def _cohort_dir(tmp_path):
    path = tmp_path / "cohort"
    path.mkdir()
    toy_cohort(200, seed=0).save(path)
    return path


def test_synth_writes_schema_aligned_records(tmp_path):
    # Setup
    cohort = _cohort_dir(tmp_path)
    out = tmp_path / "records.parquet"
    # Run
    result = CliRunner().invoke(app, ["synth", "--reference", str(cohort), "--generator", "noisy_copy",
                                      "--strength", "0.3", "--n", "25", "--seed", "4", "--out", str(out)])
    # Assert
    assert result.exit_code == 0, result.output
    records = load_records(out, Cohort.load(cohort).schema)
    assert len(records) == 25 and (records.generator == "noisy_copy").all() and (records.strength == 0.3).all()
    assert "25 noisy_copy records" in result.output


def test_synth_unknown_generator_is_an_input_error(tmp_path):
    # Setup
    cohort = _cohort_dir(tmp_path)
    # Run
    result = CliRunner().invoke(app, ["synth", "--reference", str(cohort), "--generator", "gan", "--n", "5",
                                      "--out", str(tmp_path / "x.parquet")])
    # Assert
    assert isinstance(result.exception, InputError) and "unknown generator" in str(result.exception)


def test_dataset_builds_splits_and_prints_histograms(tmp_path):
    # Setup
    cohort = _cohort_dir(tmp_path)
    out = tmp_path / "dataset"
    # Run
    result = CliRunner().invoke(app, ["dataset", "--reference", str(cohort), "--out", str(out), "--size", "200",
                                      "--seed", "5", "--pool-factor", "2", "--strengths", "0,0.5,1"])
    # Assert
    assert result.exit_code == 0, result.output
    summary = json.loads((out / "dataset.json").read_text())
    assert summary["config"]["size"] == 200 and summary["config"]["strengths"] == [0.0, 0.5, 1.0]
    for split in ("train", "val", "test", "test_unseen"):
        assert split in result.output
        assert len(pd.read_parquet(out / f"{split}.parquet")) == summary["splits"][split]["n"]
    assert (out / "reference" / "vectors.parquet").exists() and (out / "config.yaml").exists()


def test_dataset_unknown_setting_is_a_config_error(tmp_path):
    # Run
    result = CliRunner().invoke(app, ["dataset", "--reference", str(tmp_path), "--out", str(tmp_path / "d"),
                                      "--pool-factr", "2"])
    # Assert
    assert isinstance(result.exception, ConfigError)
