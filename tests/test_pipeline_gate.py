"""The gate's decision rule and its MLflow registration of generators and judges (real local SQLite store)."""

import os

import numpy as np
import pandas as pd
import pytest

from ehrjudge.pipeline.gate import GateConfig, decide, register


def test_decide_accepts_and_refuses_with_reasons():
    cfg = GateConfig(threshold=6.0, max_near_copy_rate=0.05)
    assert decide(7.2, 0.01, cfg, 100).accepted
    refused = decide(4.0, 0.20, cfg, 100)
    assert not refused.accepted and len(refused.reasons) == 2
    assert "below the threshold" in refused.reasons[0] and "near-copy" in refused.reasons[1]


def test_register_creates_versions_only_when_accepted(tmp_path):
    # Setup
    import mlflow

    synthetic = tmp_path / "synthetic.parquet"
    pd.DataFrame({"record_id": ["a", "b"], "age": [50.0, 60.0]}).to_parquet(synthetic)
    cfg = GateConfig(registry_dir=str(tmp_path / "mlruns"))
    # Run
    first = register(decide(8.0, 0.0, cfg, 2), synthetic, "gen-x", cfg, {})
    refused = register(decide(2.0, 0.0, cfg, 2), synthetic, "gen-x", cfg, {})
    second = register(decide(9.0, 0.0, cfg, 2), synthetic, "gen-x", cfg, {})
    # Assert
    assert (first.version, refused.version, second.version) == ("1", None, "2")
    model = mlflow.pyfunc.load_model("models:/gen-x/2")
    sample = model.predict(pd.DataFrame({"n": [3], "seed": [1]}))
    assert len(sample) == 3 and set(sample["record_id"]) <= {"a", "b"}
    assert np.isclose(sample["age"].between(50, 60).mean(), 1.0)


def test_calibrated_gate_without_calibration_fails_before_judging(tmp_path):
    import pytest

    from ehrjudge.config import load_config
    from ehrjudge.errors import ConfigError, InputError
    from ehrjudge.pipeline.gate import run_gate

    # Setup: a judge folder with no calibration.json, and no synthetic file at all (judging would fail otherwise)
    judge = tmp_path / "judge"
    judge.mkdir()
    # Run / Assert
    with pytest.raises(InputError, match="no calibration.json") as error:
        run_gate(str(judge), str(tmp_path / "missing.parquet"), "gen", GateConfig(score="calibrated"))
    assert str(judge) in str(error.value)
    with pytest.raises(ConfigError, match="score"):
        load_config(GateConfig, None, ["--score", "median"])
    # a capped gate needs a judge whose prompt shows the cap line: this folder records no prompt at all
    with pytest.raises(InputError, match="no score cap line") as error:
        run_gate(str(judge), str(tmp_path / "missing.parquet"), "gen", GateConfig(score="capped"))
    assert str(judge) in str(error.value)


@pytest.mark.usefixtures("one_torch_thread")
def test_register_judge_makes_a_model_version_that_scores_records(tiny_trained_judge, tmp_path):
    # Setup
    import mlflow

    from ehrjudge import Judge
    from ehrjudge.pipeline.gate import register_judge

    judge = tiny_trained_judge / "run" / "best"
    records = pd.read_parquet(tiny_trained_judge / "dataset" / "test.parquet")
    cfg = GateConfig(registry_dir=str(tmp_path / "mlruns"))
    # Run
    versions = [register_judge(judge, "judge-x", cfg), register_judge(judge, "judge-x", cfg)]
    model = mlflow.pyfunc.load_model("models:/judge-x/2")
    # Assert: a new version each time; the registered model scores as Judge.score does, from its own copy
    assert versions == ["1", "2"]
    pd.testing.assert_frame_equal(model.predict(records), Judge.load(judge).score(records))
    run = mlflow.get_run(mlflow.MlflowClient().get_model_version("judge-x", "2").tags["judge.run_id"])
    assert run.data.tags["judge.base_model"] == "tiny-llama" and "val/spearman" in run.data.metrics


def test_register_judge_refuses_a_folder_that_is_not_self_contained(tmp_path):
    from ehrjudge.errors import InputError
    from ehrjudge.pipeline.gate import register_judge

    # Setup: an older judge folder (its description names an absolute dataset path, format 1)
    (tmp_path / "judge").mkdir()
    (tmp_path / "judge" / "ehrjudge.json").write_text('{"dataset": "/somewhere/dataset", "prompt": {}}')
    # Run / Assert
    with pytest.raises(InputError, match="self-contained"):
        register_judge(tmp_path / "judge", "judge-y", GateConfig(registry_dir=str(tmp_path / "mlruns")))
    assert not (tmp_path / "mlruns").exists()


def test_register_judge_refuses_a_judge_that_reads_patients(tmp_path):
    """A findings_dcr judge reads the reference patients when judging; a served model carries none: refused."""
    import json

    from ehrjudge.errors import InputError
    from ehrjudge.judge.artifact import FORMAT
    from ehrjudge.pipeline.gate import register_judge

    # Setup: a self-contained folder description whose prompt is the findings_dcr text
    (tmp_path / "judge").mkdir()
    (tmp_path / "judge" / "ehrjudge.json").write_text(json.dumps({"format": FORMAT,
                                                                   "prompt": {"record_format": "findings_dcr"}}))
    # Run / Assert
    with pytest.raises(InputError, match="findings_dcr"):
        register_judge(tmp_path / "judge", "judge-z", GateConfig(registry_dir=str(tmp_path / "mlruns")))
    assert not (tmp_path / "mlruns").exists()


@pytest.mark.usefixtures("one_torch_thread")
def test_register_judge_command_registers_the_folder_where_its_flags_say(tiny_trained_judge, tmp_path, monkeypatch):
    # Setup
    import mlflow
    from typer.testing import CliRunner

    from ehrjudge import Judge
    from ehrjudge.cli import app

    judge = tiny_trained_judge / "run" / "best"
    records = pd.read_parquet(tiny_trained_judge / "dataset" / "test.parquet").head(4)
    uri = f"sqlite:///{tmp_path / 'store' / 'mlflow.db'}"
    (tmp_path / "store").mkdir()
    # Run
    result = CliRunner().invoke(app, ["register-judge", "--judge", str(judge), "--name", "judge-cli",
                                      "--tracking-uri", uri, "--experiment", "judges"])
    # Assert: version 1 in the store --tracking-uri names, under --experiment, scoring as Judge.score does
    assert result.exit_code == 0, result.output
    assert "registered judge-cli version 1 (experiment judges): models:/judge-cli/1" in result.output
    client = mlflow.MlflowClient(tracking_uri=uri)
    run = client.get_run(client.get_model_version("judge-cli", "1").tags["judge.run_id"])
    assert client.get_experiment(run.info.experiment_id).name == "judges"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)  # restored after the test (set_tracking_uri exports it too)
    mlflow.set_tracking_uri(uri)
    pd.testing.assert_frame_equal(mlflow.pyfunc.load_model("models:/judge-cli/1").predict(records),
                                  Judge.load(judge).score(records))


def test_choosing_a_store_does_not_leak_it_into_the_environment(tmp_path, monkeypatch):
    """mlflow.set_tracking_uri exports $MLFLOW_TRACKING_URI; setup_mlflow puts the user's value back, so one run's
    store does not become the next run's (or a subprocess's) store."""
    import mlflow

    from ehrjudge import tracking

    monkeypatch.setenv("MLFLOW_TRACKING_URI", "placeholder")  # recorded, so the teardown restores the real value
    monkeypatch.delenv("MLFLOW_TRACKING_URI")
    monkeypatch.setattr(tracking, "USER_TRACKING_URI", None)
    previous = mlflow.get_tracking_uri()
    try:
        tracking.setup_mlflow(tmp_path / "a", "leak-check")
        assert mlflow.get_tracking_uri() == f"sqlite:///{(tmp_path / 'a').resolve() / 'mlflow.db'}"
        assert "MLFLOW_TRACKING_URI" not in os.environ
        monkeypatch.setattr(tracking, "USER_TRACKING_URI", "sqlite:////users/own.db")
        assert tracking.resolve_tracking_uri(tmp_path / "b") == "sqlite:////users/own.db"
    finally:
        mlflow.set_tracking_uri(previous)
        monkeypatch.setattr(tracking, "USER_TRACKING_URI", None)
        tracking.keep_user_environment()
