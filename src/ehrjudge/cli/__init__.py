"""Command-line entry point: `ehrjudge COMMAND --help` documents every command."""

from __future__ import annotations

import importlib
import logging
import signal
import sys

from ehrjudge.cli.app import app
from ehrjudge.errors import EhrJudgeError

# One module per pipeline area; each registers its commands on `app` when imported.
COMMAND_MODULES = ["cohort", "scoring", "synth", "judge", "train", "pipeline", "generator"]
for _name in COMMAND_MODULES:
    importlib.import_module(f"ehrjudge.cli.{_name}")


def _exit(signum, frame) -> None:
    raise SystemExit(128 + signum)  # unwinds the stack: finally-blocks remove temporary files


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    signal.signal(signal.SIGTERM, _exit)
    try:
        app()
    except EhrJudgeError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
