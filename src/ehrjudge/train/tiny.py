"""A tiny, easy judge dataset for tests and smoke runs, to pair with ehrjudge.judge.tiny.tiny_judge.

realism_score is 9 for male records and 2 for female ones, so the compact record text
("Demographics: male, age 41, alive") holds the answer: a judge that reads it can reach Spearman 1.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from ehrjudge.cohort.schema import Cohort, FeatureSpec, Schema
from ehrjudge.io import atomic_dir, write_parquet
from ehrjudge.judge.prompt import PromptConfig

FEATURES = [FeatureSpec("gender", "demographics", "binary", "gender"),
            FeatureSpec("age", "demographics", "continuous", "age"),
            FeatureSpec("is_dead", "demographics", "binary", "died")]


# A short prompt: a tiny random model mixes information over a few dozen tokens far better than over 80.
TINY_PROMPT = PromptConfig(system_prompt="Rate.", instruction="", suffix="")


def _records(n: int, rng: np.random.Generator, prefix: str) -> pd.DataFrame:
    gender = rng.integers(0, 2, n).astype(float)
    frame = pd.DataFrame({"record_id": [f"{prefix}-{i}" for i in range(n)], "generator": "tiny", "strength": 0.0,
                          "gender": gender, "age": rng.integers(20, 90, n).astype(float),
                          "is_dead": np.zeros(n)})
    frame["realism_score"] = np.where(gender == 1, 9, 2)
    return frame


def _save_patients(folder: Path, records: pd.DataFrame, schema: Schema, first_id: int) -> None:
    patients = records.drop(columns=["record_id", "generator", "strength", "realism_score"])
    patients.insert(0, "subject_id", np.arange(len(patients)) + first_id)
    folder.mkdir()
    Cohort(vectors=patients, schema=schema).save(folder)


def tiny_dataset(out: Path, n_train: int = 64, n_eval: int = 32, seed: int = 0) -> Path:
    """Write a judge dataset dir (reference/, holdout/, train/val/test/test_unseen.parquet) for the easy task."""
    rng = np.random.default_rng(seed)
    schema = Schema(features=list(FEATURES), source="tiny")
    with atomic_dir(out) as tmp:
        _save_patients(tmp / "reference", _records(50, rng, "ref"), schema, first_id=0)
        for split, n in (("train", n_train), ("val", n_eval), ("test", n_eval), ("test_unseen", n_eval)):
            write_parquet(tmp / f"{split}.parquet", _records(n, rng, split))
        # real patients kept out of the reference, as a built dataset has (own seed: the splits stay as they were)
        _save_patients(tmp / "holdout", _records(20, np.random.default_rng([seed, 1]), "hold"), schema, first_id=1000)
    return Path(out)
