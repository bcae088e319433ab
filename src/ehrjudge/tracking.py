"""Tracking, in one module: the metric sinks of a training run (metrics.jsonl, TensorBoard, MLflow) and the MLflow
store set-up shared by training, the pipeline and the gate. `none` imports no tracker.

MLflow 3.x keeps its plain-file store in maintenance mode and refuses it by default, so the local
default is a SQLite store: `sqlite:///<root>/mlflow.db` with artifacts under `<root>/mlartifacts`.
A server is used when `MLFLOW_TRACKING_URI` is set or a URI is given in config.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
from pathlib import Path

from ehrjudge.config import to_dict
from ehrjudge.errors import ConfigError

log = logging.getLogger(__name__)
# The user's own setting, read once: mlflow.set_tracking_uri() exports MLFLOW_TRACKING_URI itself, so
# reading the variable later would return whatever store the previous stage pointed at.
USER_TRACKING_URI = os.environ.get("MLFLOW_TRACKING_URI")
_override: list[str] = []
TRACKERS = ("mlflow", "tensorboard")
STORE_DIR = "mlruns"  # the local MLflow store folder of a training run, an `ehrjudge run` folder and the gate


@contextlib.contextmanager
def tracking_store(uri: str):
    """Send every MLflow call made inside the block (e.g. by the trainer) to `uri`."""
    _override.append(uri)
    try:
        yield
    finally:
        _override.pop()


def resolve_tracking_uri(root: str | os.PathLike, uri: str | None = None) -> str:
    """Config URI, else an enclosing tracking_store(), else the user's $MLFLOW_TRACKING_URI,
    else a SQLite store inside `root`."""
    if uri:
        return uri
    if _override:
        return _override[-1]
    if USER_TRACKING_URI:
        return USER_TRACKING_URI
    root = Path(root).resolve()
    root.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{root / 'mlflow.db'}"


def keep_user_environment() -> None:
    """Put $MLFLOW_TRACKING_URI back to the user's own value (or unset it): `mlflow.set_tracking_uri` also writes
    it to os.environ, so without this one store chosen here would become every later store of the process (read
    as the user's own URI) and of every subprocess it starts."""
    if USER_TRACKING_URI is None:
        os.environ.pop("MLFLOW_TRACKING_URI", None)
    else:
        os.environ["MLFLOW_TRACKING_URI"] = USER_TRACKING_URI


def setup_mlflow(root: str | os.PathLike, experiment: str, uri: str | None = None):
    """Point MLflow at the resolved store and return the experiment id (artifacts under root)."""
    import mlflow

    tracking_uri = resolve_tracking_uri(root, uri)
    mlflow.set_tracking_uri(tracking_uri)
    keep_user_environment()
    existing = mlflow.get_experiment_by_name(experiment)
    if existing is not None:
        experiment_id = existing.experiment_id
    else:
        artifacts = None
        if tracking_uri.startswith("sqlite:///"):
            artifacts = (Path(tracking_uri[len("sqlite:///"):]).parent / "mlartifacts").as_uri()
        experiment_id = mlflow.create_experiment(experiment, artifact_location=artifacts)
    mlflow.set_experiment(experiment_id=experiment_id)
    log.info("MLflow tracking at %s (experiment %s)", tracking_uri, experiment)
    return experiment_id


def parse_trackers(spec: str) -> list[str]:
    """The tracker names of a comma list (`mlflow,tensorboard`); `none` or empty = none."""
    names = [n.strip().lower() for n in spec.split(",") if n.strip()]
    if names in ([], ["none"]):
        return []
    unknown = [n for n in names if n not in TRACKERS]
    if unknown:
        raise ConfigError(f"tracking: unknown tracker(s) {unknown}; choose from {list(TRACKERS)} or none")
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

            # MLflow 3 refuses its plain-file store: sqlite in the run dir (or $MLFLOW_TRACKING_URI when set).
            setup_mlflow(self.run_dir / STORE_DIR, "ehrjudge-train")
            self._mlflow = mlflow
            mlflow.start_run(run_name=self.run_dir.name)
            flat = flatten_params(to_dict(config))
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


def flatten_params(data: dict, prefix: str = "") -> dict:
    """A nested config dict as flat `a.b.c` keys (MLflow params)."""
    out = {}
    for key, value in data.items():
        if isinstance(value, dict):
            out.update(flatten_params(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out
