"""The --engine flags of `ehrjudge score` and `ehrjudge judge`, built from EngineConfig (its help is the one source)."""

from __future__ import annotations

import dataclasses

import typer

from ehrjudge.engine import EngineConfig

_FIELDS = {field.name: field for field in dataclasses.fields(EngineConfig)}


def _flag(name: str):
    field = _FIELDS[name]
    return typer.Option(field.default, "--" + name.replace("_", "-"), help=field.metadata["help"])


ENGINE = _flag("engine")
RAY_ADDRESS = _flag("ray_address")
WORKERS = _flag("workers")
CPUS_PER_WORKER = _flag("cpus_per_worker")
GPUS_PER_WORKER = _flag("gpus_per_worker")
