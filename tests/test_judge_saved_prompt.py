"""A trained judge is run with the prompt it was trained on, wherever it is loaded from."""

import json

import yaml

from ehrjudge.cli.judge import with_trained_prompt
from ehrjudge.judge.prompt import PromptConfig, saved_prompt
from ehrjudge.judge.scoring import JudgeConfig


def write_training_run(run_dir):
    (run_dir / "best").mkdir(parents=True)
    (run_dir / "config.yaml").write_text(yaml.safe_dump(
        {"method": "expected", "prompt": {"record_format": "deviations", "max_record_tokens": 96,
                                          "system_prompt": "You rate synthetic patient records."}}))
    return run_dir / "best"


def test_saved_prompt_reads_the_training_run_config(tmp_path):
    # Setup
    best = write_training_run(tmp_path / "run")
    # Run
    prompt = saved_prompt(best)
    # Assert
    assert prompt == PromptConfig(record_format="deviations", max_record_tokens=96,
                                  system_prompt="You rate synthetic patient records.")
    assert saved_prompt(tmp_path) is None  # a folder that records no prompt


def test_saved_prompt_reads_the_pipeline_judge_info(tmp_path):
    # Setup: the judge folder of `ehrjudge run`
    (tmp_path / "ehrjudge.json").write_text(json.dumps({"prompt": {"record_format": "csv",
                                                                   "max_record_tokens": 64}}))
    # Run / Assert
    assert saved_prompt(tmp_path) == PromptConfig(record_format="csv", max_record_tokens=64)


def test_judge_cli_uses_the_trained_prompt_unless_one_is_set(tmp_path):
    # Setup
    best = write_training_run(tmp_path / "run")
    config = JudgeConfig(model=str(best))
    # Run
    chosen = with_trained_prompt(config, None, {"model": str(best)})
    overridden = with_trained_prompt(config, None, {"model": str(best), "prompt": {"record_format": "compact"}})
    # Assert
    assert chosen.prompt.record_format == "deviations" and chosen.prompt.max_record_tokens == 96
    assert overridden is config  # an explicit prompt setting wins
    assert with_trained_prompt(JudgeConfig(), None, {}).prompt == PromptConfig()  # the default model: no change


def test_judge_cli_refuses_a_trained_folder_without_its_prompt(tmp_path):
    import pytest

    from ehrjudge.errors import InputError

    # Setup: an adapter folder with no ehrjudge.json and no training config.yaml beside or above it
    (tmp_path / "adapter").mkdir()
    (tmp_path / "adapter" / "adapter_config.json").write_text("{}")
    # Run / Assert
    with pytest.raises(InputError, match="records no prompt"):
        with_trained_prompt(JudgeConfig(model=str(tmp_path / "adapter")), None, {})
    explicit = {"model": str(tmp_path / "adapter"), "prompt": {"record_format": "csv"}}
    assert with_trained_prompt(JudgeConfig(model=str(tmp_path / "adapter")), None, explicit).model.endswith("adapter")
