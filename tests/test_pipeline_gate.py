"""The gate's decision rule and its MLflow registration (real local SQLite store)."""

import numpy as np
import pandas as pd

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
