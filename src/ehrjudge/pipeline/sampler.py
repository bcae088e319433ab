"""The MLflow pyfuncs registered by the gate: records of a gated set, or a gated tuned generator's checkpoint."""

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


class TunedGeneratorModel(mlflow.pyfunc.PythonModel):
    """predict(DataFrame with optional columns n, seed) -> the parsed records of n completions sampled (seeded)
    from the registered checkpoint (a `tune-generator` generator folder, generator/model.py); completions that
    do not parse are dropped here, and counted in the column attribute `parse_failures` of the result."""

    def load_context(self, context):
        from ehrjudge.generator.model import TunedGenerator

        self.generator = TunedGenerator.load(context.artifacts["generator"])

    def predict(self, context, model_input: pd.DataFrame, params: dict | None = None) -> pd.DataFrame:
        n = int(model_input["n"].iloc[0]) if "n" in model_input else 1
        seed = int(model_input["seed"].iloc[0]) if "seed" in model_input else 0
        samples = self.generator.sample(n, seed=seed)
        records = samples.records.copy()
        records.attrs["parse_failures"] = len(samples.failures)
        return records
