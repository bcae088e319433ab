"""MLflow set-up shared by training, the pipeline and the gate.

MLflow 3.x keeps its plain-file store in maintenance mode and refuses it by default, so the local
default is a SQLite store: `sqlite:///<root>/mlflow.db` with artifacts under `<root>/mlartifacts`.
A server is used when `MLFLOW_TRACKING_URI` is set or a URI is given in config.
"""

from __future__ import annotations

import contextlib
import logging
import os
from pathlib import Path

log = logging.getLogger(__name__)
# The user's own setting, read once: mlflow.set_tracking_uri() exports MLFLOW_TRACKING_URI itself, so
# reading the variable later would return whatever store the previous stage pointed at.
USER_TRACKING_URI = os.environ.get("MLFLOW_TRACKING_URI")
_override: list[str] = []


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


def setup_mlflow(root: str | os.PathLike, experiment: str, uri: str | None = None):
    """Point MLflow at the resolved store and return the experiment id (artifacts under root)."""
    import mlflow

    tracking_uri = resolve_tracking_uri(root, uri)
    mlflow.set_tracking_uri(tracking_uri)
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
