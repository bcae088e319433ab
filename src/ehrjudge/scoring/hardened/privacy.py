"""The hardened score's privacy input: each record's distance to its closest reference patient (DCR) against the
distance at which held-out real patients sit from the reference.

    DCR(x)  = min_r ||z(x) - z(r)||_2        z: reference z-scores on the reference's varying columns
    DCR_q   = the `percentile`-th percentile of DCR over held-out real patients (the near-copy threshold)
    ratio   = DCR / DCR_q                     < 1: closer than nearly all new real patients are (a near copy)
    privacy_cap = 1 + 9 min(1, ratio)         (scorer.py)

Park et al. 2018 (DCR); Yale et al. 2020. The one place this distance is computed: the hardened scorer caps by it,
and the `findings_dcr` record text (judge/findings.py) shows the ratio, so a judge reading it sees exactly what the
score's privacy cap sees. It needs the patients; no judge folder stores them.
"""

from __future__ import annotations

import logging

import numpy as np

from ehrjudge.errors import InputError
from ehrjudge.scoring.knn import ExactKNN

log = logging.getLogger(__name__)

EXACT_COPY = 1e-9  # DCR at or below this (reference z-scores) is an exact copy of a reference patient


class ClosestPatient:
    """`ClosestPatient(percentile, chunk_size).fit(reference, calibration)`; then `nearest(records)`, `ratio(records)`."""

    def __init__(self, percentile: float = 5.0, chunk_size: int = 2048):
        self.percentile, self.chunk_size = percentile, chunk_size

    def fit(self, reference: np.ndarray, calibration: np.ndarray) -> "ClosestPatient":
        std = reference.std(axis=0)
        self.varying_ = std > 0
        if not self.varying_.any():
            raise InputError("every column is constant in the reference; nothing to measure distances in")
        self.mean_, self.scale_ = reference.mean(axis=0), np.where(self.varying_, std, 1.0)
        standardized = self.standardize(reference)
        self.knn_ = ExactKNN(standardized, self.chunk_size)
        self.reference_nn_ = self.knn_.kneighbors(standardized, 2)[0][:, 1]  # each one's nearest other
        held_out = self.nearest(calibration)[0]
        self.holdout_dcr_ = np.sort(held_out)
        self.threshold_ = float(np.percentile(held_out, self.percentile))
        if not self.threshold_ > 0:  # real duplicates exist (sparse vectors): cap at the closest non-duplicate
            positive = self.holdout_dcr_[self.holdout_dcr_ > EXACT_COPY]
            if not len(positive):
                raise InputError("every held-out real record duplicates a reference record; the holdout must hold "
                                 "other patients")
            self.threshold_ = float(positive[0])
            log.warning("score/privacy %.1f %% of held-out patients duplicate a reference patient; the near-copy "
                        "threshold is their smallest non-zero DCR, %.3g",
                        100 * float((self.holdout_dcr_ <= EXACT_COPY).mean()), self.threshold_)
        return self

    def standardize(self, records: np.ndarray) -> np.ndarray:
        """z-scores on the reference's varying columns: the space of the distances, as the seed score's kNN."""
        return (records[:, self.varying_] - self.mean_[self.varying_]) / self.scale_[self.varying_]

    def nearest(self, records: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(DCR, index of the closest reference patient) per record, chunked."""
        step = self.chunk_size
        parts = [self.knn_.kneighbors(self.standardize(records[i:i + step]), 1) for i in range(0, len(records), step)]
        return (np.concatenate([d[:, 0] for d, _ in parts]), np.concatenate([j[:, 0] for _, j in parts]))

    def ratio(self, records: np.ndarray) -> np.ndarray:
        """DCR / DCR_q per record."""
        return self.nearest(records)[0] / self.threshold_
