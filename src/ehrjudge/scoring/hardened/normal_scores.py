"""Per-column rank-based normal scores (the Gaussian-copula transform), with linear tails beyond the reference.

For a column with reference values sorted into distinct levels u_1 < ... < u_m:
    F(u_i) = (#{x < u_i} + #{x = u_i} / 2) / n                 mid-rank empirical CDF, in (0, 1)
    z(u_i) = Phi^-1(F(u_i))                                      normal score of a level
    z(x)   = linear interpolation between levels                 u_1 <= x <= u_m
    z(x)   = z(u_m) + (x - u_m) / sd,  z(u_1) - (u_1 - x) / sd   beyond the reference, in SDs of the column
Heavy-tailed counts get a bounded, roughly normal spread inside the reference's range (so a Mahalanobis distance on
normal scores keeps resolution where real records live), while a value outside the range is measured in ordinary
z units and is not clipped away. Mid-ranks follow the normal-scores tradition (van der Waerden 1952); the Gaussian
copula of synthcity / SDV uses the same transform.
"""

from __future__ import annotations

import numpy as np
from scipy.special import ndtri


class NormalScores:
    """`NormalScores().fit(reference).transform(records)` -> (n, p) normal scores; p = reference columns."""

    def fit(self, reference: np.ndarray) -> "NormalScores":
        columns = [np.unique(reference[:, j], return_counts=True) for j in range(reference.shape[1])]
        return self.fit_histograms([levels for levels, _ in columns], [counts for _, counts in columns],
                                   reference.std(axis=0))

    def fit_histograms(self, levels: list, counts: list, std) -> "NormalScores":
        """The same fit from each column's distinct levels (ascending), how many reference rows hold each, and the
        column's std: all the transform needs, so it can be stored without the rows."""
        std = np.asarray(std, dtype=np.float64)
        self.slope_ = 1.0 / np.where(std > 0, std, 1.0)  # (p,) z per unit beyond the range
        self.levels_, self.scores_ = [], []
        for column_levels, column_counts in zip(levels, counts):
            column_counts = np.asarray(column_counts, dtype=np.float64)
            below = np.concatenate([[0], np.cumsum(column_counts)[:-1]])
            self.levels_.append(np.asarray(column_levels, dtype=np.float64))
            self.scores_.append(ndtri((below + column_counts / 2.0) / column_counts.sum()))
        return self

    def transform(self, records: np.ndarray) -> np.ndarray:
        out = np.empty(records.shape, dtype=np.float64)
        for j, (levels, scores) in enumerate(zip(self.levels_, self.scores_)):
            x = records[:, j]
            if len(levels) == 1:  # constant in the reference: distance from the constant, in units of max(1, |c|)
                out[:, j] = (x - levels[0]) / max(1.0, abs(levels[0]))
                continue
            z = np.interp(x, levels, scores)
            z = np.where(x > levels[-1], scores[-1] + (x - levels[-1]) * self.slope_[j], z)
            out[:, j] = np.where(x < levels[0], scores[0] - (levels[0] - x) * self.slope_[j], z)
        return out
