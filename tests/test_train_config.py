"""TrainConfig loading: unknown keys fail, flags override YAML, the CLI saves the resolved config."""

import pytest
import yaml

from ehrjudge.config import load_config
from ehrjudge.errors import ConfigError
from ehrjudge.train.config import TrainConfig


def test_unknown_key_fails(tmp_path):
    # Setup
    path = tmp_path / "train.yaml"
    path.write_text(yaml.safe_dump({"method": "expected", "learning_rat": 1e-4}))
    # Run / Assert
    with pytest.raises(ConfigError, match="learning_rat"):
        load_config(TrainConfig, path)
    with pytest.raises(ConfigError, match="no_such_flag"):
        load_config(TrainConfig, None, ["--no-such-flag", "3"])


def test_flags_override_yaml_which_overrides_defaults(tmp_path):
    # Setup
    path = tmp_path / "train.yaml"
    path.write_text(yaml.safe_dump({"method": "grpo", "kl_coef": 0.1, "batch_size": 4,
                                    "prompt": {"max_record_tokens": 128}}))
    # Run
    config = load_config(TrainConfig, path, ["--kl-coef", "0", "--prompt.record-format", "csv"])
    # Assert
    assert config.method == "grpo" and config.batch_size == 4  # from YAML
    assert config.kl_coef == 0.0  # flag beats YAML
    assert config.prompt.max_record_tokens == 128 and config.prompt.record_format == "csv"
    assert config.learning_rate == TrainConfig().learning_rate  # default kept


def test_bad_choice_fails():
    # Run / Assert
    with pytest.raises(ConfigError, match="method"):
        load_config(TrainConfig, None, ["--method", "ppo"])
    with pytest.raises(ConfigError, match="reward"):
        load_config(TrainConfig, None, ["--reward", "cubic"])


def test_shipped_configs_load():
    # Setup
    from pathlib import Path

    root = Path(__file__).resolve().parents[1] / "configs"
    # Run
    config = load_config(TrainConfig, root / "train_default.yaml")
    # Assert
    assert config.method == "expected"
