"""What produced a run: the package version, the git commit of the code (when it runs from a checkout) and a hash
of the resolved config, saved in summary.json and shown in the report's header."""

from __future__ import annotations

import hashlib
import json
import logging
import subprocess
from pathlib import Path

log = logging.getLogger(__name__)
PACKAGE_DIR = Path(__file__).resolve().parents[1]


def git_commit(path: Path = PACKAGE_DIR) -> str | None:
    """The commit checked out at `path` (with "-dirty" when tracked files differ from it); None outside a checkout
    or without git (an installed wheel)."""
    def git(*args: str) -> str:
        return subprocess.run(["git", "-C", str(path), *args], capture_output=True, text=True, check=True,
                              timeout=10).stdout.strip()

    try:
        commit = git("rev-parse", "HEAD")
        dirty = bool(git("status", "--porcelain", "--untracked-files=no"))
    except (OSError, subprocess.SubprocessError) as exc:  # not a checkout, or no git: the commit is unknown
        log.debug("no git commit for %s: %s", path, exc)
        return None
    return commit + ("-dirty" if dirty else "")


def config_hash(settings: dict) -> str:
    """sha256 (first 16 hex digits) of the settings as canonical JSON: equal configs, equal hashes."""
    text = json.dumps(settings, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def provenance(settings: dict) -> dict:
    """{version, commit, config_hash} of a run with the resolved `settings`."""
    from ehrjudge import __version__

    return {"version": __version__, "commit": git_commit(), "config_hash": config_hash(settings)}
