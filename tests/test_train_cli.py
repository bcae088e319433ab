"""`ehrjudge train` and `ehrjudge evaluate-judge` end to end on a tiny judge and the tiny easy dataset."""

import json

import pytest
import yaml
from typer.testing import CliRunner

from ehrjudge.cli import app
from ehrjudge.judge.baseline import FORMULA_ROW
from ehrjudge.judge.tiny import save_tiny_judge
from ehrjudge.train.tiny import tiny_dataset


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_train_then_evaluate_cli(tmp_path):
    # Setup
    dataset = tiny_dataset(tmp_path / "data", n_train=16, n_eval=8, seed=1)
    model = save_tiny_judge(tmp_path / "tiny-judge")
    config = tmp_path / "train.yaml"
    config.write_text(yaml.safe_dump({"model": str(model), "dataset": str(dataset), "tracking": "tensorboard",
                                      "train_layers": 1, "lora_r": 4, "batch_size": 8, "epochs": 1, "max_steps": 0,
                                      "learning_rate": 1e-2, "prompt": {"system_prompt": "Rate.", "instruction": "",
                                                                        "suffix": ""}}))
    run_dir = tmp_path / "run"
    runner = CliRunner()
    # Run: the flag overrides the YAML's epochs
    trained = runner.invoke(app, ["train", "--config", str(config), "--out", str(run_dir), "--epochs", "2",
                                  "--debug"])
    # the identity map as the saved calibration: its row must equal the expected-score row exactly
    (run_dir / "best" / "calibration.json").write_text(json.dumps({"slope": 1.0, "intercept": 0.0, "n": 8,
                                                                   "fitted_on": "test"}))
    evaluated = runner.invoke(app, ["evaluate-judge", "--judge", str(run_dir / "best"), "--dataset", str(dataset),
                                    "--zero-shot", "skip", "--out", str(tmp_path / "eval")])
    # Assert
    assert trained.exit_code == 0, trained.output
    saved = yaml.safe_load((run_dir / "config.yaml").read_text())
    assert saved["epochs"] == 2 and saved["lora_r"] == 4
    assert json.loads((run_dir / "summary.json").read_text())["steps"] == 4
    assert list((run_dir / "tensorboard").glob("events.out.tfevents.*"))
    assert evaluated.exit_code == 0, evaluated.output
    assert "Baseline Realism Scores: Mean=" in evaluated.output and "Spearman Correlation:" in evaluated.output
    result = json.loads((tmp_path / "eval" / "evaluation.json").read_text())
    assert set(result["splits"]) == {"test", "test_unseen"}
    rows = result["splits"]["test"]["rows"]
    # (of the capped score: this judge's default prompt has the cap line)
    assert rows["RLVR judge (calibrated expected score)"] == rows["RLVR judge (capped score)"]
    # the cheap scorers beside the judge, every row with its records/s, and the verifiable score's own
    assert {FORMULA_ROW, "Regressor (hist_gradient_boosting) on patient vectors"} <= set(rows)
    assert all(row["records_per_second"] > 0 for row in rows.values())
    assert result["splits"]["test"]["verifiable"]["records_per_second"] > 0
    assert "records/s" in evaluated.output and "verifiable realism score itself:" in evaluated.output
    assert "calibrated score = clip(1.0000 * score +0.0000, 1, 10)" in evaluated.output
    assert result["prompt"]["system_prompt"] == "Rate."  # the training prompt is reused


def test_unknown_flag_exits_2():
    # Run: the real entry point, which turns EhrJudgeError into "error: ..." and exit code 2
    import subprocess
    import sys

    result = subprocess.run([sys.executable, "-c", "from ehrjudge.cli import main; main()", "train",
                             "--no-such-key", "1"], capture_output=True, text=True, timeout=120)
    # Assert
    assert result.returncode == 2
    assert "error: unknown config key 'no_such_key'" in result.stderr
