"""Command-line entry point: `ehrjudge COMMAND --help` documents every command."""

from __future__ import annotations

import importlib
import logging
import sys

from ehrjudge.cli.app import app
from ehrjudge.errors import EhrJudgeError

# One module per pipeline area; each registers its commands on `app` when imported.
COMMAND_MODULES = ["cohort", "scoring", "synth", "judge", "train", "pipeline"]
for _name in COMMAND_MODULES:
    importlib.import_module(f"ehrjudge.cli.{_name}")


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        app()
    except EhrJudgeError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
