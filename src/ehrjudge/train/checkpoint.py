"""Atomic training checkpoints: trainable weights, optimizer, scheduler, RNG states, data position, step.

checkpoints/step-000040/ holds trainable.pt (only parameters with requires_grad), state.pt (the rest), and
latest.json in the run dir names the newest complete one: a kill mid-write leaves the previous one intact.
"""

from __future__ import annotations

import json
import random
import shutil
from pathlib import Path

import numpy as np
import torch

from ehrjudge.errors import InputError
from ehrjudge.io import atomic_dir, write_json


def trainable_state(model) -> dict[str, torch.Tensor]:
    return {name: p.detach().clone() for name, p in model.named_parameters() if p.requires_grad}


def rng_states(sampler: torch.Generator) -> dict:
    return {"torch": torch.get_rng_state(), "sampler": sampler.get_state(), "numpy": np.random.get_state(),
            "python": random.getstate()}


def restore_rng(states: dict, sampler: torch.Generator) -> None:
    torch.set_rng_state(states["torch"])
    sampler.set_state(states["sampler"])
    np.random.set_state(states["numpy"])
    random.setstate(states["python"])


def save_checkpoint(run_dir: Path, step: int, model, state: dict, keep: int) -> Path:
    """Write checkpoints/step-N atomically, point latest.json at it, prune to the newest `keep`."""
    root = Path(run_dir) / "checkpoints"
    target = root / f"step-{step:06d}"
    with atomic_dir(target) as tmp:
        torch.save(trainable_state(model), tmp / "trainable.pt")
        torch.save(state, tmp / "state.pt")
    write_json(Path(run_dir) / "latest.json", {"step": step, "path": str(target.relative_to(run_dir))})
    existing = sorted(p for p in root.glob("step-*") if p.is_dir())
    for old in existing[:-max(keep, 1)]:
        shutil.rmtree(old)
    return target


def load_latest(run_dir: Path, model) -> dict:
    """Load the newest checkpoint's trainable weights into `model`; return its state dict."""
    pointer = Path(run_dir) / "latest.json"
    if not pointer.exists():
        raise InputError("nothing to resume: no checkpoint in the run directory", file=pointer)
    path = Path(run_dir) / json.loads(pointer.read_text())["path"]
    weights = torch.load(path / "trainable.pt", weights_only=True)
    parameters = dict(model.named_parameters())
    unknown = [name for name in weights if name not in parameters]
    if unknown:
        raise InputError(f"checkpoint does not match the model: unknown parameters {unknown[:3]}", file=path)
    with torch.no_grad():
        for name, value in weights.items():
            parameters[name].copy_(value)
    return torch.load(path / "state.pt", weights_only=False)
