"""Correlation-matrix distance: ||C_real - C_synthetic||_F / d over the d columns that vary in the real set.

C is the Pearson correlation matrix. ||.||_F / d is the root-mean-square entry difference, in [0, 2].
A column constant in the synthetic set has no correlation; it counts as 0 correlation with every other
column (so a generator that flattens a column is penalized, not ignored).
"""

from __future__ import annotations

import numpy as np

from ehrjudge.errors import MetricUndefinedError
from ehrjudge.scoring.metric import Metric

CORRELATION = Metric("correlation/frobenius_distance", "minimize", 0.0, 2.0,
                     "RMS difference of the Pearson correlation matrices (Frobenius norm / d)")


def correlation_matrix(matrix: np.ndarray) -> np.ndarray:
    """Pearson correlations with 0 for constant columns and 1 on the diagonal."""
    centered = matrix - matrix.mean(axis=0)
    norms = np.sqrt((centered ** 2).sum(axis=0))
    varying = norms > 0
    scaled = np.zeros_like(centered)
    scaled[:, varying] = centered[:, varying] / norms[varying]
    corr = scaled.T @ scaled  # (d, d)
    np.fill_diagonal(corr, 1.0)
    return np.clip(corr, -1.0, 1.0)


def correlation_metrics(real: np.ndarray, synthetic: np.ndarray) -> list[dict]:
    varying = real.std(axis=0) > 0
    d = int(varying.sum())
    if d < 2:
        raise MetricUndefinedError(f"only {d} column(s) vary in the real set; no correlations to compare")
    difference = correlation_matrix(real[:, varying]) - correlation_matrix(synthetic[:, varying])
    distance = np.linalg.norm(difference, "fro") / d
    return [CORRELATION.result(distance, n_columns=d, max_abs_difference=float(np.abs(difference).max()))]
