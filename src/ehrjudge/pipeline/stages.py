"""Stage runner: each stage writes one folder atomically and is skipped when its inputs are unchanged.

A stage's input key is the SHA-256 of its resolved settings plus the output hashes of the stages it
reads, so changing a setting re-runs that stage and everything downstream of it, and nothing else.
Long stages get a persistent scratch folder (`<out>/.work/<stage>`) for resumable checkpoints: the
atomic output folder only appears once the stage has finished.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import ehrjudge
from ehrjudge.io import atomic_dir, write_json

log = logging.getLogger(__name__)
MANIFEST = "stage.json"


def hash_inputs(inputs: dict) -> str:
    """SHA-256 of a JSON-able settings mapping (key order does not matter)."""
    text = json.dumps({"inputs": inputs, "version": ehrjudge.__version__}, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()


def hash_folder(folder: Path) -> str:
    """SHA-256 over every file's relative path and bytes, except the stage manifest."""
    digest = hashlib.sha256()
    for path in sorted(p for p in Path(folder).rglob("*") if p.is_file() and p.name != MANIFEST):
        digest.update(str(path.relative_to(folder)).encode())
        with open(path, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


@dataclass
class StageRecord:
    name: str
    input_hash: str
    output_hash: str
    seconds: float
    skipped: bool


@dataclass
class StageRunner:
    """Runs stages under `out`, skipping those whose manifest matches their inputs."""

    out: Path
    force: frozenset[str] = frozenset()  # stage names to re-run regardless of the cache
    records: list[StageRecord] = field(default_factory=list)

    def stage_dir(self, name: str) -> Path:
        return Path(self.out) / name

    def work_dir(self, name: str) -> Path:
        path = Path(self.out) / ".work" / name
        path.mkdir(parents=True, exist_ok=True)
        return path

    def cached(self, name: str, input_hash: str) -> dict | None:
        manifest = self.stage_dir(name) / MANIFEST
        if name in self.force or not manifest.exists():
            return None
        data = json.loads(manifest.read_text())
        if data.get("input_hash") != input_hash:
            return None
        if hash_folder(self.stage_dir(name)) != data.get("output_hash"):
            log.warning("stage %s: output changed on disk since it was written; re-running", name)
            return None
        return data

    def run(self, name: str, inputs: dict, build: Callable[[Path], None]) -> str:
        """Run `build(tmp_dir)` unless cached; return the stage's output hash."""
        input_hash = hash_inputs(inputs)
        hit = self.cached(name, input_hash)
        if hit is not None:
            log.info("stage %s: inputs unchanged, skipped", name)
            self.records.append(StageRecord(name, input_hash, hit["output_hash"], hit["seconds"], True))
            return hit["output_hash"]
        log.info("stage %s: running", name)
        start = time.perf_counter()
        with atomic_dir(self.stage_dir(name)) as tmp:
            build(tmp)
            seconds = time.perf_counter() - start
            output_hash = hash_folder(tmp)
            write_json(tmp / MANIFEST, {"stage": name, "input_hash": input_hash, "output_hash": output_hash,
                                        "seconds": round(seconds, 3), "inputs": inputs})
        shutil.rmtree(Path(self.out) / ".work" / name, ignore_errors=True)
        self.records.append(StageRecord(name, input_hash, output_hash, seconds, False))
        return output_hash
