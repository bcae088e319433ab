"""The hardened score's typicality input: how far a record sits from the reference's centre, against how far
held-out real patients sit.

    u(x)   = NormalScores(x) on the reference's varying columns, centred on the reference's mean normal score
    d(x)   = sqrt(u' S^-1 u)                 S: shrunk covariance of the reference's u (ScoreConfig.covariance)
    d_med  = median d over held-out real patients
    ratio  = d / d_med                       ~1 for a new real patient; s_typicality = 10 - 9 clip(log ratio / log R1)

Per-column normal scores keep heavy-tailed counts from spending the scale (docs/scoring.md). The one place this
distance is computed: the hardened scorer reads it, and the `findings_dcr` text's typicality line
(PromptConfig.show_typicality) shows the ratio. It is fitted on the patients; no judge folder stores it.
"""

from __future__ import annotations

import numpy as np

from ehrjudge.errors import InputError
from ehrjudge.scoring.hardened.normal_scores import NormalScores
from ehrjudge.scoring.mahalanobis import ShrunkMahalanobis


class Typicality:
    """`Typicality(covariance, chunk_size, precision).fit(reference, calibration)`; then `distance(records)`,
    `ratio(records)`."""

    def __init__(self, covariance: str = "ledoit_wolf", chunk_size: int = 2048, precision: str = "float32"):
        self.covariance, self.chunk_size, self.precision = covariance, chunk_size, precision

    def fit(self, reference: np.ndarray, calibration: np.ndarray) -> "Typicality":
        self.normal_ = NormalScores().fit(reference)
        scores = self.normal_.transform(reference)  # (n, p)
        self.varying_ = reference.std(axis=0) > 0
        if not self.varying_.any():
            raise InputError("every column is constant in the reference; nothing to score against")
        self.center_ = scores[:, self.varying_].mean(axis=0)
        centered = scores[:, self.varying_] - self.center_
        self.mahalanobis_ = ShrunkMahalanobis(self.covariance, self.chunk_size, self.precision).fit(centered)
        self.median_distance_ = float(np.median(self.distance(calibration)))
        if not self.median_distance_ > 0:
            raise InputError("half the held-out real records sit at the reference's centre (median Mahalanobis "
                             "distance 0); the holdout must hold other patients")
        return self

    def distance(self, records: np.ndarray) -> np.ndarray:
        """d per record, chunked."""
        step = self.chunk_size
        return np.concatenate([self._chunk(records[i:i + step]) for i in range(0, len(records), step)]) \
            if len(records) else np.zeros(0)

    def _chunk(self, records: np.ndarray) -> np.ndarray:
        return self.mahalanobis_.distance(self.normal_.transform(records)[:, self.varying_] - self.center_)

    def ratio(self, records: np.ndarray) -> np.ndarray:
        """d / d_med per record."""
        return self.distance(records) / self.median_distance_
