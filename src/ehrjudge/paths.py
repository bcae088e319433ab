"""Where ehrjudge caches converted models and simulated cohorts."""

from __future__ import annotations

import os
from pathlib import Path

DEFAULT_DATASET = "judge-clinosim-n500-s42"  # ehrjudge dataset on the default clinosim cohort, under datasets/


def cache_dir(*parts: str) -> Path:
    """$EHRJUDGE_CACHE (default ~/.cache/ehrjudge), joined with `parts` and created."""
    root = Path(os.environ.get("EHRJUDGE_CACHE", Path.home() / ".cache" / "ehrjudge"))
    path = root.joinpath(*parts)
    path.mkdir(parents=True, exist_ok=True)
    return path
