"""Distances -> component scores on the 1..10 scale (higher = more realistic).

Both mappings are piecewise linear and clipped, so every score is bounded:
- Mahalanobis: 10 at/below a "good" distance, 1 at/above a "bad" one. `fixed` uses two anchors on the
  per-column distance d / sqrt(p); `quantile` works on log distance, with 10 at the held-out-real median and
  the held-out 95th percentile at `tail_score`, extrapolated linearly in log distance down to 1.
- kNN: further from the reference is better (privacy), but only up to a cap: 1 at/below a "copy" distance,
  10 at/above a "private" distance, flat beyond it. Being an outlier earns nothing extra here; the
  Mahalanobis component already penalizes it.
"""

from __future__ import annotations

import numpy as np

from ehrjudge.errors import InputError


def linear_score(value: np.ndarray, at_one: float, at_ten: float) -> np.ndarray:
    """1 at `at_one`, 10 at `at_ten`, linear between, clipped to [1, 10]; works in either direction."""
    if at_one == at_ten:
        raise InputError(f"score anchors must differ (both {at_one})")
    fraction = (np.asarray(value, dtype=np.float64) - at_one) / (at_ten - at_one)
    return 1.0 + 9.0 * np.clip(fraction, 0.0, 1.0)


def quantile_maha_anchors(holdout_distances: np.ndarray, good_quantile: float, tail_quantile: float,
                          tail_score: float) -> tuple[float, float]:
    """Log-distance anchors (at_one, at_ten) so that the held-out `good_quantile` scores 10 and
    the held-out `tail_quantile` scores `tail_score`."""
    log_good = float(np.log(np.quantile(holdout_distances, good_quantile)))
    log_tail = float(np.log(np.quantile(holdout_distances, tail_quantile)))
    if not log_tail > log_good:
        raise InputError("held-out Mahalanobis distances are degenerate (tail quantile == good quantile); "
                         "use mapping=fixed or a larger holdout")
    # Linear in log distance: slope of (10 - tail_score) points over [log_good, log_tail], reaching 1 at:
    log_bad = log_good + (log_tail - log_good) * 9.0 / (10.0 - tail_score)
    return log_bad, log_good


def quantile_knn_anchors(holdout_knn: np.ndarray, private_quantile: float) -> tuple[float, float]:
    """(at_one, at_ten) for kNN: 1 at distance 0 (a copy), 10 at the held-out `private_quantile`."""
    private = float(np.quantile(holdout_knn, private_quantile))
    if not private > 0:
        raise InputError("held-out kNN distances are all zero (duplicated records); use mapping=fixed")
    return 0.0, private
