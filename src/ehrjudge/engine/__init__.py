"""Where `ehrjudge score` and `ehrjudge judge` run: `local` (this process) or `ray` (record partitions on Ray).

Both engines give the same bytes: the Ray engine cuts the work where the local one already does (the scorer's
`chunk_size` chunks; the judge's length-sorted batches and its shared prompt prefix), so every record meets the same
arithmetic. Float sums also depend on the thread count and the CPU, so "the same" means: workers on the same kind
of CPU, each running as many threads as the local run (`OMP_NUM_THREADS`). docs/scale.md.

This module stays light (no numpy, torch or ray at import); the Ray code is engine/ray_partitions.py.
"""

from __future__ import annotations

import dataclasses
import math

from ehrjudge.errors import ConfigError

ENGINES = ("local", "ray")


def option(default, help: str):
    """ehrjudge.config.option for a scalar field, without importing that module's yaml: the CLI builds its flags
    from these fields when it starts (`ehrjudge --help` stays fast)."""
    return dataclasses.field(default=default, metadata={"help": help})


@dataclasses.dataclass(frozen=True)
class EngineConfig:
    """Where scoring and judging run; each field is a flag of `ehrjudge score` and `ehrjudge judge`."""

    engine: str = option("local", "local (this process) or ray (record partitions on a Ray cluster, the model or "
                                  "scorer loaded once per worker; same results, docs/scale.md)")
    ray_address: str | None = option(None, "ray: the cluster to join (host:6379 on a node, ray://head:10001 "
                                           "from outside, local = a new one); default $RAY_ADDRESS, else a "
                                           "`ray start` cluster on this machine, else one started for the command")
    workers: int = option(0, "ray: worker actors, each holding one copy of the judge (or scorer); 0 = as many as "
                             "the cluster's CPUs (GPUs with --gpus-per-worker) allow")
    cpus_per_worker: float = option(1.0, "ray: CPUs reserved per worker; a worker runs ceil(this) threads")
    gpus_per_worker: float = option(0.0, "ray: GPUs per judge worker (e.g. 1, or 0.5 for two per GPU); the judge "
                                         "then runs on CUDA with --device auto")

    def __post_init__(self):
        checks = [
            (self.engine in ENGINES, f"engine must be one of {', '.join(ENGINES)}, got {self.engine!r}"),
            (self.workers >= 0, "workers must be >= 0"),
            (self.cpus_per_worker > 0, "cpus_per_worker must be > 0"),
            (self.gpus_per_worker >= 0, "gpus_per_worker must be >= 0"),
        ]
        for ok, message in checks:
            if not ok:
                raise ConfigError(f"EngineConfig: {message}")

    @property
    def threads(self) -> int:
        """Threads each worker runs (torch and BLAS)."""
        return max(1, math.ceil(self.cpus_per_worker))


LOCAL = EngineConfig()


def score_matrix(scorer, matrix, engine: EngineConfig = LOCAL):
    """`scorer.score(matrix)` (a fitted RealismScorer on an (n, p) float64 matrix), on the chosen engine."""
    if engine.engine == "local":
        return scorer.score(matrix)
    ray_engine = _ray_engine()
    with ray_engine.ray_session(engine):
        return ray_engine.score_on_ray(scorer, matrix, engine)


def judge_frame(judge_config, records, schema, reference, engine: EngineConfig = LOCAL):
    """(scores, tokenizer): `judge_records` of the judge that `judge_config` (a JudgeConfig) names, on the chosen
    engine. `reference` is the reference cohort's ReferenceStats; the tokenizer is the one the prompts used."""
    if engine.engine == "local":
        from ehrjudge.judge.model import load_judge
        from ehrjudge.judge.scoring import judge_records

        model, tokenizer = load_judge(judge_config.model, judge_config.device, judge_config.dtype,
                                      judge_config.adapter, judge_config.precision)
        scores = judge_records(model, tokenizer, records, schema, judge_config.prompt, judge_config.batch_size,
                               judge_config.reuse_prefix, reference)
        return scores, tokenizer
    ray_engine = _ray_engine()
    with ray_engine.ray_session(engine):
        return ray_engine.judge_on_ray(judge_config, records, schema, reference, engine)


def _ray_engine():
    """engine/ray_partitions.py, or a ConfigError saying how to install Ray."""
    try:
        from ehrjudge.engine import ray_partitions
    except ModuleNotFoundError as exc:
        if exc.name != "ray" and not str(exc.name).startswith("ray."):
            raise
        raise ConfigError("--engine ray needs Ray, which is not installed: pip install 'ehrjudge[ray]' (or "
                          "pip install 'ray[data]')") from exc
    return ray_partitions
