"""The MLflow pyfunc registered by the gate: a 'generator' that serves records of the gated set."""

from __future__ import annotations

import mlflow.pyfunc
import pandas as pd


class SyntheticSampler(mlflow.pyfunc.PythonModel):
    """predict(DataFrame with optional columns n, seed) -> n records sampled (seeded) from the set."""

    def load_context(self, context):
        self.records = pd.read_parquet(context.artifacts["records"])

    def predict(self, context, model_input: pd.DataFrame, params: dict | None = None) -> pd.DataFrame:
        n = int(model_input["n"].iloc[0]) if "n" in model_input else len(self.records)
        seed = int(model_input["seed"].iloc[0]) if "seed" in model_input else 0
        return self.records.sample(n=n, replace=n > len(self.records), random_state=seed)
