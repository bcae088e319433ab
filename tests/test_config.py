"""Config precedence and strictness: defaults -> base -> YAML -> flags; unknown keys fail."""

import dataclasses
from typing import Literal

import pytest

from ehrjudge.config import config_from_dict, describe, load_config, option, parse_flags, save_config, to_dict
from ehrjudge.errors import ConfigError


@dataclasses.dataclass
class Inner:
    k: int = option(5, "neighbours")


@dataclasses.dataclass
class Outer:
    lr: float = option(1e-4, "learning rate")
    method: Literal["expected", "reinforce"] = option("expected", "training method")
    debug: bool = option(False, "verbose")
    names: list[str] = option(["a"], "some names")
    inner: Inner = option(Inner(), "nested section")
    out: str | None = option(None, "optional path")


def test_precedence_defaults_yaml_flags(tmp_path):
    # Setup
    path = tmp_path / "c.yaml"
    path.write_text("lr: 0.5\nmethod: reinforce\ninner:\n  k: 7\n")
    # Run
    cfg = load_config(Outer, path, ["--lr", "0.25", "--inner.k=9", "--debug"])
    # Assert
    assert cfg.lr == 0.25 and cfg.method == "reinforce" and cfg.inner.k == 9 and cfg.debug is True
    assert cfg.names == ["a"] and cfg.out is None


def test_unknown_and_mistyped_keys_fail(tmp_path):
    with pytest.raises(ConfigError, match="unknown config key 'lrr'"):
        config_from_dict(Outer, {"lrr": 1})
    with pytest.raises(ConfigError, match="inner.k"):
        config_from_dict(Outer, {"inner": {"k": "many"}})
    with pytest.raises(ConfigError, match="not one of"):
        config_from_dict(Outer, {"method": "ppo"})
    with pytest.raises(ConfigError, match="unknown config key 'inner.j'"):
        load_config(Outer, None, ["--inner.j", "1"])


def test_flags_parse_forms():
    assert parse_flags(["--a-b", "1", "--c=x", "--no-d", "--e"]) == {"a_b": "1", "c": "x", "d": "false", "e": "true"}
    with pytest.raises(ConfigError):
        parse_flags(["positional"])


def test_save_roundtrip_and_describe(tmp_path):
    cfg = load_config(Outer, None, {"names": "x,y", "out": "run"})
    save_config(cfg, tmp_path / "resolved.yaml")
    again = load_config(Outer, tmp_path / "resolved.yaml")
    assert to_dict(again) == to_dict(cfg) and again.names == ["x", "y"]
    text = describe(Outer)
    assert "--lr (float, default 0.0001): learning rate" in text and "--inner.k" in text


def test_mutable_defaults_are_not_shared():
    first, second = Outer(), Outer()
    first.names.append("b")
    first.inner.k = 1
    assert second.names == ["a"] and second.inner.k == 5


@dataclasses.dataclass
class Parent:
    inner: Inner = option(Inner(k=11), "nested section whose default differs from Inner()")
    other: int = option(0, "x")


def test_partial_nested_override_keeps_the_parent_default():
    """Regression (lead): overriding one nested key reset the others to the class defaults."""

    @dataclasses.dataclass
    class Two:
        k: int = option(1, "a")
        j: int = option(2, "b")

    @dataclasses.dataclass
    class Holder:
        two: Two = option(Two(k=5, j=6), "section")

    cfg = config_from_dict(Holder, {"two": {"j": 9}})
    assert (cfg.two.k, cfg.two.j) == (5, 9)
    assert config_from_dict(Parent, {"other": 1}).inner.k == 11
