"""`ehrjudge score` and `ehrjudge evaluate`: real command runs, byte-identical re-runs, located errors."""

import json
import os
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

import ehrjudge.cli.scoring  # noqa: F401 - registers the commands on `app`
from ehrjudge.scoring.hardened.scorer import HardenedScorer
from ehrjudge.cli.app import app
from ehrjudge.cohort.schema import Cohort, FeatureSpec, Schema
from ehrjudge.errors import InputError

FEATURES = [
    FeatureSpec("gender", "demographics", "binary", "male (1) / female (0)"),
    FeatureSpec("age", "demographics", "continuous", "age in years"),
    FeatureSpec("is_dead", "demographics", "binary", "died in hospital"),
    FeatureSpec("admissions_count", "admissions", "count", "admissions"),
    FeatureSpec("diagnoses_I10", "diagnoses", "count", "hypertension", code="I10"),
    FeatureSpec("diagnoses_E11", "diagnoses", "count", "type 2 diabetes", code="E11"),
    FeatureSpec("prescriptions_count", "prescriptions", "count", "prescriptions"),
    FeatureSpec("labs_glucose", "labs", "count", "glucose measurements", code="2345-7"),
]


def vectors(n: int, seed: int, id_column: str) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    age = rng.uniform(20, 90, n)
    is_dead = (rng.random(n) < 0.1 + 0.4 * (age > 75)).astype(float)
    frame = pd.DataFrame({
        "gender": rng.integers(0, 2, n).astype(float), "age": age.round(), "is_dead": is_dead,
        "admissions_count": 1 + rng.poisson(1 + is_dead), "diagnoses_I10": rng.poisson(age / 60),
        "diagnoses_E11": rng.poisson(0.4, n), "prescriptions_count": rng.poisson(2 + age / 30),
        "labs_glucose": rng.poisson(1.5, n)}).astype(float)
    frame.insert(0, id_column, [f"{id_column[0]}{i}" for i in range(n)])
    return frame


@pytest.fixture
def inputs(tmp_path):
    schema = Schema(FEATURES, source="test")
    paths = {}
    for name, n, seed in (("reference", 200, 1), ("holdout", 80, 2)):
        paths[name] = tmp_path / name
        paths[name].mkdir()
        Cohort(vectors(n, seed, "subject_id"), schema).save(paths[name])
    synthetic = vectors(60, 3, "record_id")
    synthetic.insert(1, "generator", "test")
    synthetic.insert(2, "strength", 0.0)
    paths["synthetic"] = tmp_path / "synthetic.parquet"
    synthetic.to_parquet(paths["synthetic"], index=False)
    return paths


def run(*args) -> object:
    return CliRunner().invoke(app, [str(a) for a in args])


def test_score_writes_one_row_per_record_and_reruns_byte_identically(inputs, tmp_path):
    # Setup
    first, second = tmp_path / "first.csv", tmp_path / "second.csv"
    common = ["--reference", inputs["reference"], "--synthetic", inputs["synthetic"], "--holdout", inputs["holdout"]]
    # Run
    result_first = run("score", *common, "--out", first, "--k", "3")
    result_second = run("score", *common, "--out", second, "--k", "3")
    # Assert
    assert result_first.exit_code == 0, result_first.output
    assert result_second.exit_code == 0, result_second.output
    assert first.read_bytes() == second.read_bytes()
    scores = pd.read_csv(first)
    assert list(scores.columns) == ["record_id", *HardenedScorer.columns]  # the default definition: hardened
    assert scores["record_id"].tolist() == [f"r{i}" for i in range(60)]
    assert scores["realism_score"].between(1, 10).all()
    saved = (tmp_path / "first.config.yaml").read_text()
    assert "k: 3" in saved and "mapping: quantile" in saved
    assert "realism_score histogram" in result_first.output


def test_score_config_file_then_flags(inputs, tmp_path):
    # Setup
    config = tmp_path / "score.yaml"
    config.write_text("mapping: fixed\nk: 4\n")
    out = tmp_path / "scores.csv"
    # Run
    result = run("score", "--reference", inputs["reference"], "--synthetic", inputs["synthetic"],
                 "--out", out, "--config", config, "--k", "2")
    # Assert
    assert result.exit_code == 0, result.output
    saved = (tmp_path / "scores.config.yaml").read_text()
    assert "mapping: fixed" in saved and "k: 2" in saved


def test_score_mismatched_columns_fail_and_write_nothing(inputs, tmp_path):
    # Setup
    bad = tmp_path / "bad.parquet"
    pd.read_parquet(inputs["synthetic"]).drop(columns=["labs_glucose"]).to_parquet(bad, index=False)
    out = tmp_path / "scores.csv"
    # Run
    result = run("score", "--reference", inputs["reference"], "--synthetic", bad, "--out", out)
    # Assert
    assert isinstance(result.exception, InputError)
    assert "labs_glucose" in str(result.exception) and "bad.parquet" in str(result.exception)
    assert not out.exists() and not list(tmp_path.glob(".scores.csv*"))


def test_score_nan_and_empty_inputs_are_located(inputs, tmp_path):
    # Setup
    frame = pd.read_parquet(inputs["synthetic"])
    with_inf = frame.copy()
    with_inf.loc[7, "age"] = np.inf
    inf_file, empty_file = tmp_path / "inf.parquet", tmp_path / "empty.parquet"
    with_inf.to_parquet(inf_file, index=False)
    frame.iloc[:0].to_parquet(empty_file, index=False)
    # Run
    inf_result = run("score", "--reference", inputs["reference"], "--synthetic", inf_file, "--out", tmp_path / "a.csv")
    empty_result = run("score", "--reference", inputs["reference"], "--synthetic", empty_file,
                       "--out", tmp_path / "b.csv")
    # Assert
    assert "column 'age', row 7" in str(inf_result.exception)
    assert "no rows" in str(empty_result.exception)
    assert not (tmp_path / "a.csv").exists() and not (tmp_path / "b.csv").exists()


def test_real_entry_point_reports_error_and_exit_code_2(inputs, tmp_path):
    # Setup: a reference smaller than k through the installed `ehrjudge` command
    out = tmp_path / "scores.csv"
    command = [sys.executable, "-c", "from ehrjudge.cli import main; main()", "score",
               "--reference", str(inputs["reference"]), "--synthetic", str(inputs["synthetic"]),
               "--out", str(out), "--k", "500"]
    # Run
    completed = subprocess.run(command, capture_output=True, text=True, env={**os.environ, "PYTHONHASHSEED": "0"})
    # Assert
    assert completed.returncode == 2
    assert "error:" in completed.stderr and "k=500" in completed.stderr
    assert not out.exists()


def test_evaluate_writes_json_report_and_prints_table(inputs, tmp_path):
    # Setup
    out = tmp_path / "report.json"
    # Run
    result = run("evaluate", "--reference", inputs["reference"], "--synthetic", inputs["synthetic"],
                 "--holdout", inputs["holdout"], "--out", out, "--score.k", "3")
    # Assert
    assert result.exit_code == 0, result.output
    report = json.loads(out.read_text())
    names = {row["name"] for row in report["metrics"]}
    assert {"dimension/mean_abs_diff", "correlation/frobenius_distance", "privacy/membership_auc",
            "efficacy/tstr_auroc", "rules/impossible_age", "realism/mean_score"} <= names
    assert report["config"]["score"]["k"] == 3
    assert "privacy/membership_auc" in result.output and "minimize" in result.output


def test_evaluate_without_holdout_reports_undefined_reasons(inputs, tmp_path):
    # Setup
    out = tmp_path / "report.json"
    # Run
    result = run("evaluate", "--reference", inputs["reference"], "--synthetic", inputs["synthetic"], "--out", out,
                 "--parts", "privacy,efficacy")
    # Assert
    assert result.exit_code == 0, result.output
    rows = {row["name"]: row for row in json.loads(out.read_text())["metrics"]}
    assert rows["efficacy/tstr_auroc"]["value"] is None and "held-out" in rows["efficacy/tstr_auroc"]["reason"]
    assert "undefined" in result.output


def test_score_ignores_score_columns_of_an_earlier_run(inputs, tmp_path):
    # Setup: a labelled file, as in a judge dataset split (features + score columns)
    first = tmp_path / "first.csv"
    common = ["--reference", inputs["reference"], "--holdout", inputs["holdout"]]
    assert run("score", *common, "--synthetic", inputs["synthetic"], "--out", first).exit_code == 0
    labelled = pd.read_parquet(inputs["synthetic"]).merge(pd.read_csv(first), on="record_id")
    labelled_file, second = tmp_path / "labelled.parquet", tmp_path / "second.csv"
    labelled.to_parquet(labelled_file, index=False)
    # Run
    result = run("score", *common, "--synthetic", labelled_file, "--out", second)
    # Assert
    assert result.exit_code == 0, result.output
    assert first.read_bytes() == second.read_bytes()
    assert "note: ignoring" in result.output and "realism_score" in result.output  # says which
