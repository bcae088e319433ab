"""Attribute inference: guess a sensitive binary column of a real record from its nearest synthetic neighbours.

The attacker knows every other column of a real patient (the quasi-identifiers), finds the k nearest
synthetic records on those columns and predicts the sensitive value by their majority (mean >= 0.5), as in
the attribute disclosure test of medGAN (Choi et al. 2017) and synthcity's attribute-inference metric.
    accuracy  share of reference (member) records whose sensitive value is guessed right
    gain      accuracy on members minus accuracy on held-out non-members: what the synthetic data leaks
              about the generator's own training patients beyond what it says about the population
"""

from __future__ import annotations

import numpy as np

from ehrjudge.cohort.schema import Schema
from ehrjudge.errors import MetricUndefinedError
from ehrjudge.scoring.knn import ExactKNN
from ehrjudge.scoring.metric import Metric
from ehrjudge.scoring.privacy.membership import standardizer

ACCURACY = Metric("privacy/attribute_inference_accuracy", "minimize", 0.0, 1.0,
                  "mean accuracy of guessing sensitive columns of reference records from synthetic neighbours")
GAIN = Metric("privacy/attribute_inference_gain", "minimize", -1.0, 1.0,
              "accuracy on reference records minus accuracy on held-out records")


def attribute_metrics(members: np.ndarray, synthetic: np.ndarray, schema: Schema, sensitive: list[str],
                      non_members: np.ndarray | None = None, k: int = 1, chunk_size: int = 2048) -> list[dict]:
    names = schema.names
    columns = [c for c in sensitive if c in names]
    if not columns:
        raise MetricUndefinedError(f"none of the sensitive columns {sensitive} is in the schema")
    if len(synthetic) < k:
        raise MetricUndefinedError(f"{len(synthetic)} synthetic records, fewer than k={k}")
    per_column, member_accuracy, gains = {}, [], []
    for column in columns:
        j = names.index(column)
        quasi = [i for i in range(len(names)) if i != j]
        scale = standardizer(members[:, quasi])
        index = ExactKNN(scale(synthetic[:, quasi]), chunk_size)
        synthetic_value = synthetic[:, j] >= 0.5

        def accuracy(real: np.ndarray) -> float:
            _, neighbours = index.kneighbors(scale(real[:, quasi]), k)
            guess = synthetic_value[neighbours].mean(axis=1) >= 0.5
            return float((guess == (real[:, j] >= 0.5)).mean())

        truth = members[:, j] >= 0.5
        entry = {"accuracy": accuracy(members), "majority_baseline": float(max(truth.mean(), 1 - truth.mean()))}
        if non_members is not None:
            entry["holdout_accuracy"] = accuracy(non_members)
            gains.append(entry["accuracy"] - entry["holdout_accuracy"])
        per_column[column] = entry
        member_accuracy.append(entry["accuracy"])
    results = [ACCURACY.result(np.mean(member_accuracy), columns=per_column, k=k)]
    if gains:
        results.append(GAIN.result(np.mean(gains), columns=per_column))
    else:
        results.append(GAIN.undefined("needs a held-out real set (--holdout)"))
    return results
