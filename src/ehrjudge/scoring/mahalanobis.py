"""Mahalanobis distance under a shrinkage covariance, solved with a Cholesky factor (no explicit inverse).

    d(z) = sqrt(z^T S^-1 z),   S = (1 - a) C + a (tr(C)/p) I
where C is the sample covariance of the (standardized, centered) reference and the shrinkage a is
Ledoit-Wolf's ("A well-conditioned estimator for large-dimensional covariance matrices", J. Multivar. Anal. 2004)
or Chen et al.'s Oracle Approximating Shrinkage (OAS, IEEE TSP 2010), both from scikit-learn.
With S = L L^T, z^T S^-1 z = ||L^-1 z||^2, computed by a triangular solve per chunk.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
from scipy.linalg import cho_factor, solve_triangular
from sklearn.covariance import OAS, LedoitWolf

from ehrjudge.errors import InputError

ESTIMATORS = {"ledoit_wolf": LedoitWolf, "oas": OAS}


class ShrunkMahalanobis:
    """Fit on centered reference rows; `distance` gives one Mahalanobis distance per query row."""

    def __init__(self, method: Literal["ledoit_wolf", "oas"] = "ledoit_wolf", chunk_size: int = 2048):
        if method not in ESTIMATORS:
            raise InputError(f"unknown covariance estimator {method!r}; choose from {sorted(ESTIMATORS)}")
        self.method = method
        self.chunk_size = int(chunk_size)

    def fit(self, centered: np.ndarray) -> "ShrunkMahalanobis":
        """`centered`: (n_ref, p) reference, already centered (and usually standardized)."""
        estimator = ESTIMATORS[self.method](store_precision=False, assume_centered=True)
        estimator.fit(centered)
        self.covariance_ = estimator.covariance_  # (p, p)
        self.shrinkage_ = float(estimator.shrinkage_)
        try:
            self.cholesky_, _ = cho_factor(self.covariance_, lower=True)
        except np.linalg.LinAlgError as exc:
            raise InputError(f"shrunk covariance is not positive definite ({exc}); "
                             "the reference has too little variation") from exc
        return self

    def distance(self, centered: np.ndarray) -> np.ndarray:
        """(n,) distances of centered query rows (n, p)."""
        out = np.empty(centered.shape[0], dtype=np.float64)
        for start in range(0, centered.shape[0], self.chunk_size):
            block = np.asarray(centered[start:start + self.chunk_size], dtype=np.float64)
            solved = solve_triangular(self.cholesky_, block.T, lower=True, check_finite=False)  # (p, c)
            out[start:start + block.shape[0]] = np.sqrt(np.einsum("ij,ij->j", solved, solved))
        return out
