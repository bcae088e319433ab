"""The command line itself: a fast --help that imports nothing heavy, --version, choices in the settings lists,
one output flag name with the old spellings kept as hidden aliases."""

import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import typer.main
from typer.testing import CliRunner

from ehrjudge import __version__
from ehrjudge.cli import app
from ehrjudge.config import describe
from ehrjudge.errors import InputError
from ehrjudge.train.config import TrainConfig

ROOT = Path(__file__).resolve().parents[1]
HEAVY = ("torch", "sklearn", "transformers", "pandas", "numpy", "scipy", "peft", "mlflow")
IMPORTED_BY_HELP = """
import sys
from ehrjudge.cli import app
try:
    app(sys.argv[1:])
except SystemExit:
    pass
print("heavy modules:", ",".join(m for m in {heavy!r} if m in sys.modules))
"""
COMMANDS = sorted(typer.main.get_command(app).commands)


def help_in_fresh_interpreter(*args: str) -> subprocess.CompletedProcess:
    """`ehrjudge ARGS --help` built in a fresh interpreter, as the installed script starts one."""
    return subprocess.run([sys.executable, "-c", IMPORTED_BY_HELP.format(heavy=HEAVY), *args, "--help"],
                          capture_output=True, text=True, timeout=120)


def test_help_imports_nothing_heavy():
    # Run
    result = help_in_fresh_interpreter()
    # Assert
    assert result.returncode == 0, result.stderr
    assert "Commands" in result.stdout and "train" in result.stdout
    assert result.stdout.strip().splitlines()[-1] == "heavy modules:"  # none was imported


@pytest.mark.parametrize("command", COMMANDS)
def test_command_help_imports_nothing_heavy(command):
    # Run: the command's help, settings list included (built from its config dataclass)
    result = help_in_fresh_interpreter(command)
    # Assert
    assert result.returncode == 0, result.stderr
    assert "Usage:" in result.stdout and command in result.stdout
    assert result.stdout.strip().splitlines()[-1] == "heavy modules:"  # none was imported


def test_version():
    result = CliRunner().invoke(app, ["--version"])
    assert result.exit_code == 0 and result.output.strip() == f"ehrjudge {__version__}"


def test_version_command_prints_the_version_pyproject_declares():
    # Setup: the one version a release is built with
    declared = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    # Run: the real command in a fresh interpreter
    result = subprocess.run([sys.executable, "-m", "ehrjudge.cli", "--version"], capture_output=True, text=True,
                            timeout=120)
    # Assert
    assert result.returncode == 0, result.stderr
    assert result.stdout == f"ehrjudge {declared}\n"


def test_settings_list_literal_choices_and_nested_defaults():
    # Run
    text = describe(TrainConfig)
    # Assert: a Literal lists its choices; a nested config shows the field's own default (not its class's)
    assert "--method ({expected,reinforce,grpo}, default 'expected')" in text
    assert "--prompt.record-format ({compact,csv,deviations,findings,findings_dcr}, default 'findings_dcr')" in text
    assert "--lora-target-modules (list of str," in text


def test_command_help_lists_settings_with_brackets_intact():
    result = CliRunner().invoke(app, ["gate", "--help"], terminal_width=200)
    assert result.exit_code == 0 and "Settings (--key value" in result.output
    assert "E_pi[k]" in result.output  # not eaten as a rich style tag


def test_report_takes_out_and_its_old_spelling(tmp_path):
    # Setup
    from test_pipeline_report import make_run

    run = make_run(tmp_path / "run")
    runner = CliRunner()
    # Run
    new = runner.invoke(app, ["report", "--out", str(run)])
    old = runner.invoke(app, ["report", "--run", str(run)])
    both = runner.invoke(app, ["report", "--out", str(run), "--run", str(run)])
    # Assert
    assert new.exit_code == 0 and old.exit_code == 0, new.output + old.output
    assert (run / "report.html").exists()
    assert both.exit_code == 2 and "give --out once" in both.output
    assert "--run" not in runner.invoke(app, ["report", "--help"]).output  # hidden


def test_evaluate_judge_takes_judge_and_its_old_spelling_once():
    # Run
    runner = CliRunner()
    both = runner.invoke(app, ["evaluate-judge", "--judge", "a", "--model", "b"])
    neither = runner.invoke(app, ["evaluate-judge"])
    # Assert
    assert both.exit_code == 2 and "give --judge once (--model is its old spelling)" in both.output
    assert neither.exit_code == 2 and "--judge DIR is required" in neither.output
    assert "--model" not in runner.invoke(app, ["evaluate-judge", "--help"]).output  # hidden


def test_tune_generator_needs_a_reference_or_a_judge_that_records_one(tmp_path):
    # Run
    result = CliRunner().invoke(app, ["tune-generator", "--out", str(tmp_path / "gen"), "--reward", "score"])
    # Assert: refused before any work, naming both ways to give it
    assert isinstance(result.exception, InputError)
    assert "--reference DIR is required unless --judge names a trained judge folder" in str(result.exception)
    assert not (tmp_path / "gen").exists()
