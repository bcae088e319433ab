"""Metric sinks for a run: TensorBoard and MLflow (local sqlite store in the run dir); `none` imports neither."""

from __future__ import annotations

import json
import logging
from pathlib import Path

from ehrjudge.config import to_dict
from ehrjudge.errors import ConfigError

log = logging.getLogger(__name__)
KNOWN = ("mlflow", "tensorboard")


def parse_trackers(spec: str) -> list[str]:
    names = [n.strip().lower() for n in spec.split(",") if n.strip()]
    if names in ([], ["none"]):
        return []
    unknown = [n for n in names if n not in KNOWN]
    if unknown:
        raise ConfigError(f"tracking: unknown tracker(s) {unknown}; choose from {list(KNOWN)} or none")
    return names


class Tracker:
    """Writes every logged dict to metrics.jsonl, plus the configured trackers."""

    def __init__(self, run_dir: Path, spec: str, config, resume: bool = False):
        self.run_dir = Path(run_dir)
        self.names = parse_trackers(spec)
        self._writer = None
        self._mlflow = None
        self._jsonl = open(self.run_dir / "metrics.jsonl", "a" if resume else "w")
        if "tensorboard" in self.names:
            from torch.utils.tensorboard import SummaryWriter

            self._writer = SummaryWriter(log_dir=str(self.run_dir / "tensorboard"))
        if "mlflow" in self.names:
            import mlflow

            from ehrjudge.tracking import setup_mlflow

            # MLflow 3 refuses its plain-file store; the shared helper uses sqlite in the run dir
            # (or $MLFLOW_TRACKING_URI when set).
            setup_mlflow(self.run_dir / "mlruns", "ehrjudge-train")
            self._mlflow = mlflow
            mlflow.start_run(run_name=self.run_dir.name)
            flat = _flatten(to_dict(config))
            mlflow.log_params({k: str(v)[:250] for k, v in flat.items()})

    def log(self, metrics: dict[str, float], step: int) -> None:
        self._jsonl.write(json.dumps({"step": step, **metrics}) + "\n")
        self._jsonl.flush()
        if self._writer is not None:
            for name, value in metrics.items():
                self._writer.add_scalar(name, value, step)
        if self._mlflow is not None:
            # MLflow metric names may not contain some characters; our prefixes use '/', which it allows.
            self._mlflow.log_metrics(metrics, step=step)

    def close(self) -> None:
        self._jsonl.close()
        if self._writer is not None:
            self._writer.close()
        if self._mlflow is not None:
            self._mlflow.end_run()


def _flatten(data: dict, prefix: str = "") -> dict:
    out = {}
    for key, value in data.items():
        if isinstance(value, dict):
            out.update(_flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out
