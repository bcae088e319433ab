"""Registering a model folder (or file) as a new version of an MLflow registered model, under any pyfunc wrapper:
the gate's synthetic-record samplers, trained judges and, later, tuned generators share this one path."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from ehrjudge.config import option
from ehrjudge.tracking import STORE_DIR


@dataclasses.dataclass
class RegistryConfig:
    """Where registrations are logged: the settings of `ehrjudge register-judge`, and the gate's (GateConfig)."""

    tracking_uri: str | None = option(None, "MLflow tracking URI (default $MLFLOW_TRACKING_URI or sqlite in "
                                            "--registry-dir)")
    registry_dir: str = option(STORE_DIR, "folder of the local MLflow store when no tracking URI is set")
    experiment: str = option("ehrjudge-gate", "MLflow experiment of gate decisions and registrations")


def register_model(model_path: str | Path, python_model, name: str, *, artifact_key: str = "model",
                   logged_as: str = "model", tags: dict | None = None, pip_requirements: list[str] | None = None
                   ) -> str:
    """Log `python_model` (an mlflow.pyfunc.PythonModel that reads context.artifacts[artifact_key]) with a copy of
    `model_path` in the active MLflow run, register it as a new version of `name`, and return that version."""
    import mlflow

    if mlflow.active_run() is None:
        raise RuntimeError("register_model logs into the active MLflow run: call it inside mlflow.start_run()")
    info = mlflow.pyfunc.log_model(name=logged_as, python_model=python_model,
                                   artifacts={artifact_key: str(model_path)}, pip_requirements=pip_requirements)
    return str(mlflow.register_model(info.model_uri, name, tags=tags).version)
