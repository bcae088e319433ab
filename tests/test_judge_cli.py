"""`ehrjudge judge` and `ehrjudge baseline` end to end on a small dataset with a tiny saved model."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from typer.testing import CliRunner

from ehrjudge.cli import app
from ehrjudge.errors import InputError
from ehrjudge.cohort.schema import Cohort, FeatureSpec, Schema
from ehrjudge.judge.baseline import FACTS_ROW, FORMULA_ROW
from ehrjudge.judge.tiny import save_tiny_judge

FEATURES = [FeatureSpec("gender", "demographics", "binary", "gender"),
            FeatureSpec("age", "demographics", "continuous", "age"),
            FeatureSpec("is_dead", "demographics", "binary", "died"),
            FeatureSpec("admissions_count", "admissions", "count", "admissions"),
            FeatureSpec("diagnoses_count", "diagnoses", "count", "diagnoses"),
            FeatureSpec("dx_icd10_i10", "diagnoses", "count", "Essential hypertension", "ICD10:I10"),
            FeatureSpec("labs_count", "labs", "count", "labs")]


def records(n, seed, id_prefix):
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame({"record_id": [f"{id_prefix}{i:04d}" for i in range(n)],
                          "generator": rng.choice(["gaussian_copula", "noisy_copy"], n),
                          "strength": rng.uniform(0, 1, n).round(2),
                          "gender": rng.integers(0, 2, n).astype(float), "age": rng.integers(18, 90, n).astype(float),
                          "is_dead": (rng.random(n) < 0.1).astype(float),
                          "admissions_count": rng.integers(0, 6, n).astype(float),
                          "diagnoses_count": rng.integers(0, 9, n).astype(float),
                          "dx_icd10_i10": rng.integers(0, 3, n).astype(float),
                          "labs_count": rng.integers(0, 30, n).astype(float)})
    frame["realism_score"] = np.clip(10 - frame["admissions_count"] - (frame["age"] > 80) * 3, 1, 10).astype(int)
    return frame


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    root = tmp_path_factory.mktemp("judge_cli")
    data = root / "dataset"
    (data / "reference").mkdir(parents=True)
    reference = records(40, 0, "R").drop(columns=["record_id", "generator", "strength", "realism_score"])
    reference.insert(0, "subject_id", [f"P{i}" for i in range(40)])
    Cohort(reference, Schema(FEATURES, source="test")).save(data / "reference")
    records(80, 1, "T").to_parquet(data / "train.parquet", index=False)
    records(30, 4, "V").to_parquet(data / "val.parquet", index=False)
    records(24, 2, "S").to_parquet(data / "test.parquet", index=False)
    synthetic = records(10, 3, "X").drop(columns=["realism_score"])
    synthetic.to_parquet(root / "synthetic.parquet", index=False)
    model = save_tiny_judge(root / "tiny_model", seed=0)
    return root, data, model


def test_judge_command_writes_scores_and_config(dataset):
    # Setup
    root, data, model = dataset
    out = root / "judged.csv"
    # Run
    result = CliRunner().invoke(app, ["judge", "--reference", str(data / "reference"), "--synthetic",
                                      str(root / "synthetic.parquet"), "--model", str(model), "--batch-size", "4",
                                      "--out", str(out), "--prompt.max-record-tokens", "64"])
    # Assert
    assert result.exit_code == 0, result.output
    scores = pd.read_csv(out)
    probabilities = scores[[f"p_{k}" for k in range(1, 11)]].to_numpy()
    assert list(scores.columns[:4]) == ["record_id", "judge_score", "expected_score", "entropy"]
    assert scores["record_id"].tolist() == [f"X{i:04d}" for i in range(10)]
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, atol=1e-6)
    np.testing.assert_array_equal(scores["judge_score"], probabilities.argmax(axis=1) + 1)
    np.testing.assert_allclose(scores["expected_score"], probabilities @ np.arange(1, 11), atol=1e-6)
    saved = yaml.safe_load(out.with_suffix(".config.yaml").read_text())
    assert saved["batch_size"] == 4 and saved["prompt"]["max_record_tokens"] == 64
    assert "<|im_start|>" in saved["prompt"]["chat_template"]  # the template actually used is saved


def test_judge_reads_a_dataset_split_ignoring_its_score_columns(dataset):
    # Setup: a judge dataset split as `ehrjudge dataset` writes it (record_id, generator, strength, features, then
    # score columns of every type: int, float, bool, text) and its bare records
    root, data, model = dataset
    split = root / "test_split.parquet"
    bare = root / "test_bare.parquet"
    labelled = pd.read_parquet(data / "test.parquet")
    labelled.assign(realism_continuous=labelled["realism_score"] + 0.25, near_copy=False, caps="invalid",
                    rule_violations="").to_parquet(split, index=False)
    labelled.drop(columns=["realism_score"]).to_parquet(bare, index=False)
    runner = CliRunner()
    common = ["judge", "--reference", str(data / "reference"), "--judge", str(model), "--batch-size", "8",
              "--prompt.max-record-tokens", "32"]
    # Run
    labelled = runner.invoke(app, [*common, "--synthetic", str(split), "--out", str(root / "split.csv")])
    plain = runner.invoke(app, [*common, "--synthetic", str(bare), "--out", str(root / "bare.csv")])
    # Assert: judged, the same scores as without the column, and a note naming what was ignored
    assert labelled.exit_code == 0 and plain.exit_code == 0, labelled.output + plain.output
    note = next(line for line in labelled.output.splitlines() if line.startswith("note: ignoring"))
    assert note.startswith(f"note: ignoring 5 score column(s) of {split}: ")
    assert set(note.rsplit(": ", 1)[1].split(", ")) == {"realism_score", "realism_continuous", "near_copy", "caps",
                                                         "rule_violations"}
    assert "note:" not in plain.output
    assert (root / "split.csv").read_bytes() == (root / "bare.csv").read_bytes()


@pytest.mark.parametrize("layout", ["run", "train"])
def test_judge_reads_the_reference_its_folder_records(dataset, tmp_path, layout):
    # Setup: a judge folder as `ehrjudge run` leaves it (train/judge/ehrjudge.json) or as `ehrjudge train` does
    # (RUN/best beside RUN/config.yaml), each naming the dataset it was trained on
    root, data, model = dataset
    if layout == "run":
        judge = shutil.copytree(model, tmp_path / "judge")
        (judge / "ehrjudge.json").write_text(json.dumps({"dataset": str(data)}))
    else:
        judge = shutil.copytree(model, tmp_path / "train" / "best")
        (tmp_path / "train" / "config.yaml").write_text(yaml.safe_dump({"method": "expected", "dataset": str(data)}))
    common = ["judge", "--judge", str(judge), "--synthetic", str(root / "synthetic.parquet"), "--batch-size", "4",
              "--prompt.max-record-tokens", "32"]
    runner = CliRunner()
    # Run
    recorded = runner.invoke(app, [*common, "--out", str(tmp_path / "recorded.csv")])
    explicit = runner.invoke(app, [*common, "--reference", str(data / "reference"), "--out",
                                   str(tmp_path / "given.csv")])
    # Assert: the recorded reference is named and gives the same scores as passing it
    assert recorded.exit_code == 0 and explicit.exit_code == 0, recorded.output + explicit.output
    assert f"note: reference cohort {data / 'reference'} (recorded by the judge folder)" in recorded.output
    assert (tmp_path / "recorded.csv").read_bytes() == (tmp_path / "given.csv").read_bytes()


@pytest.mark.parametrize(("recorded", "message"), [
    (None, "the judge folder records no reference cohort"),
    ("moved", "records the dataset {moved}, whose reference/schema.json is not on this machine")])
def test_judge_without_a_reference_says_what_to_pass(dataset, tmp_path, recorded, message):
    # Setup: a plain model folder (records nothing), or a judge whose recorded dataset is not on this machine
    root, data, model = dataset
    judge = shutil.copytree(model, tmp_path / "judge")
    if recorded:
        from ehrjudge.config import to_dict
        from ehrjudge.judge.prompt import PromptConfig

        # a judge folder records its prompt too (one that does not is refused before the reference is looked up)
        (judge / "ehrjudge.json").write_text(json.dumps({"dataset": str(tmp_path / recorded),
                                                         "prompt": to_dict(PromptConfig())}))
    # Run
    result = CliRunner().invoke(app, ["judge", "--judge", str(judge), "--synthetic", str(root / "synthetic.parquet"),
                                      "--out", str(tmp_path / "o.csv")])
    # Assert: refused, naming the folder and the flag to pass
    assert isinstance(result.exception, InputError)
    assert message.format(moved=tmp_path / "moved") in str(result.exception)
    assert "pass --reference DIR" in str(result.exception) and str(judge) in str(result.exception)
    assert not (tmp_path / "o.csv").exists()


def test_baseline_command_writes_report(dataset):
    # Setup
    root, data, model = dataset
    out = root / "baseline"
    # Run
    result = CliRunner().invoke(app, ["baseline", "--dataset", str(data), "--split", "test", "--limit", "20",
                                      "--model", str(model), "--out", str(out), "--n-bootstrap", "200",
                                      "--judge.batch-size", "8"])
    # Assert
    assert result.exit_code == 0, result.output
    report = json.loads((out / "report.json").read_text())
    assert report["n_records"] == 20 and report["n_train"] == 80
    assert [row["metric"] for row in report["score_table"]][:3] == [
        "Verifiable realism_score", "Judge score (argmax)", "Judge expected score"]
    regressor = report["agreement"]["Regressor (hist_gradient_boosting) on patient vectors"]
    assert regressor["spearman"] > 0.5  # the score is a simple function of the features
    # this fixture's score is not monotone in the distance from the reference (few admissions are unusual too):
    # the line fitted on val falls, so no 1..10 map is made and the formula reports its raw -log d
    assert report["formula_calibration"] is None and report["agreement"][FORMULA_ROW]["spearman"] is not None
    assert all(row["records_per_second"] > 0 for row in report["agreement"].values())
    # the fixture's stats carry value domains, so the findings-facts regressor is reported beside the others
    assert set(report["records_per_second"]) == {"judge", "formula", "regressor", "facts", "verifiable"}
    assert report["agreement"][FACTS_ROW]["spearman"] is not None
    assert "Records/s" in result.output and "verifiable realism score:" in result.output
    assert len(report["largest_disagreements"]) == 5
    assert all(row["record_text"].startswith("Demographics:") for row in report["largest_disagreements"])
    gaps = [abs(r["judge_score"] - r["realism_score"]) for r in report["largest_disagreements"]]
    table = pd.read_csv(out / "judge_scores.csv")
    assert gaps[0] == (table["judge_score"] - table["realism_score"]).abs().max() and gaps == sorted(gaps)[::-1]
    markdown = (out / "report.md").read_text()
    assert "| Realism Score Metric | Mean | Std | Min | Max |" in markdown
    assert f"| {FORMULA_ROW} |" in markdown and "The verifiable realism score itself:" in markdown
    np.testing.assert_allclose(table["formula_score"], -np.log(table["formula_distance"]), rtol=1e-9)
    assert (out / "config.yaml").exists() and (out / "judge_config.yaml").exists()


def test_cli_reports_bad_input_as_error_exit_2(dataset, tmp_path):
    # Setup: a records file lacking a schema column
    root, data, model = dataset
    bad = pd.read_parquet(root / "synthetic.parquet").drop(columns=["age"])
    bad.to_parquet(tmp_path / "bad.parquet", index=False)
    executable = Path(sys.executable).with_name("ehrjudge")
    # Run
    result = subprocess.run([str(executable), "judge", "--reference", str(data / "reference"), "--synthetic",
                             str(tmp_path / "bad.parquet"), "--model", str(model), "--out", str(tmp_path / "o.csv")],
                            capture_output=True, text=True, env={**os.environ, "TOKENIZERS_PARALLELISM": "false"})
    # Assert
    assert result.returncode == 2
    assert "error:" in result.stderr and "'age'" in result.stderr
    assert not (tmp_path / "o.csv").exists()
