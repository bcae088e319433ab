"""The judge as an MLflow pyfunc model: `predict` takes record rows (a DataFrame in the judge's schema, record_id
optional) and returns Judge.score's frame, so `mlflow models serve` scores records over HTTP:

    mlflow models serve -m MODEL --env-manager local --port 5000
    curl localhost:5000/invocations -H 'Content-Type: application/json' \
         -d '{"dataframe_split": {"columns": ["record_id", "age", ...], "data": [["r1", 54.0, ...]]}}'

The model's artifact is the judge folder itself (judge/artifact.py): an adapter folder names its base model, found
where it is served as Judge.load finds it; a folder from Judge.export_merged carries the merged weights and needs
nothing else. ehrjudge must be importable where the model is served (`--env-manager local`).
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import mlflow.pyfunc
import pandas as pd

ARTIFACT = "model"  # the key of the judge folder in context.artifacts
RUNTIME = ("ehrjudge", "torch", "transformers", "peft", "pandas")


class JudgeModel(mlflow.pyfunc.PythonModel):
    """predict(records DataFrame) -> record_id, judge_score, expected_score, [capped_score], [calibrated_score],
    entropy, p_1..p_10."""

    def load_context(self, context):
        from ehrjudge.api import Judge

        self.judge = Judge.load(context.artifacts[ARTIFACT])

    def predict(self, context, model_input: pd.DataFrame, params: dict | None = None) -> pd.DataFrame:
        return self.judge.score(pd.DataFrame(model_input))


def requirements(names=RUNTIME) -> list[str]:
    """Packages pinned to the versions installed here: a logged model's pip requirements, given so that MLflow
    does not infer them (which loads the model in a subprocess, ~8 s)."""
    pinned = []
    for name in names:
        try:
            pinned.append(f"{name}=={version(name)}")
        except PackageNotFoundError:
            pinned.append(name)
    return pinned


def save_judge_model(judge_dir: str | Path, path: str | Path) -> Path:
    """An MLflow model folder at `path` (for `mlflow models serve -m path`) holding a copy of the judge folder."""
    from ehrjudge.judge.artifact import read_judge

    read_judge(judge_dir)  # a folder that cannot be scored is refused here, not when it is served
    mlflow.pyfunc.save_model(str(path), python_model=JudgeModel(), artifacts={ARTIFACT: str(judge_dir)},
                             pip_requirements=requirements())
    return Path(path)
