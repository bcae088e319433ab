"""alpha-precision, beta-recall and authenticity (Alaa et al., "How Faithful is your Synthetic Data? Sample-level
Metrics for Evaluating and Auditing Generative Models", ICML 2022), in the data space ("naive" variant, as
synthcity's AlphaPrecision computes it without the one-class embedding), on reference-standardized columns.

    B(c, r_a): ball around the real centre c holding a share a of real records (radius = a-quantile of ||x - c||)
    P_a  = share of synthetic records inside B(c, r_a)                          (alpha-precision curve)
    R_b  = share of real records whose nearest synthetic record y is closer than their own nearest real neighbour
           and inside the b-quantile ball of the synthetic records around the synthetic centre (beta-recall curve)
    alpha_precision = 1 - sum_a |P_a - a| / sum_a a,   beta_recall = 1 - sum_b |R_b - b| / sum_b b   (a, b on a grid)
    authenticity    = share of synthetic records further from their nearest real record r than r is from its own
                      nearest other real record (the per-record test, averaged)
Each lies in [0, 1], higher is better; copies have authenticity 0.
"""

from __future__ import annotations

import numpy as np

from ehrjudge.errors import MetricUndefinedError
from ehrjudge.scoring.knn import ExactKNN
from ehrjudge.scoring.metric import Metric
from ehrjudge.scoring.privacy.membership import standardizer

ALPHA_PRECISION = Metric("fidelity/alpha_precision", "maximize", 0.0, 1.0,
                         "Alaa et al. 2022 alpha-precision: synthetic records as typical as real ones (1 = ideal)")
BETA_RECALL = Metric("fidelity/beta_recall", "maximize", 0.0, 1.0,
                     "Alaa et al. 2022 beta-recall: real diversity covered by synthetic records (1 = ideal)")
AUTHENTICITY = Metric("privacy/authenticity", "maximize", 0.0, 1.0,
                      "Alaa et al. 2022 authenticity: share of synthetic records that are not copies of a real one")
GRID = np.linspace(0.0, 1.0, 30)


def alpha_precision_metrics(real: np.ndarray, synthetic: np.ndarray, chunk_size: int = 2048) -> list[dict]:
    if len(real) < 3 or len(synthetic) < 2:
        raise MetricUndefinedError("alpha-precision needs at least 3 real and 2 synthetic records")
    scale = standardizer(real)
    real, synthetic = scale(real), scale(synthetic)
    centre, synthetic_centre = real.mean(axis=0), synthetic.mean(axis=0)
    radii = np.quantile(np.linalg.norm(real - centre, axis=1), GRID)
    synthetic_radius = np.linalg.norm(synthetic - centre, axis=1)
    precision_curve = (synthetic_radius[None, :] <= radii[:, None]).mean(axis=1)  # (grid,)

    real_index = ExactKNN(real, chunk_size)
    real_to_real = real_index.kneighbors(real, 2)[0][:, 1]  # (n_real,) nearest other real record
    real_to_synthetic, closest = ExactKNN(synthetic, chunk_size).kneighbors(real, 1)
    real_to_synthetic, closest = real_to_synthetic[:, 0], closest[:, 0]
    closest_radius = np.linalg.norm(synthetic[closest] - synthetic_centre, axis=1)
    synthetic_radii = np.quantile(closest_radius, GRID)
    covered = real_to_synthetic <= real_to_real  # (n_real,)
    recall_curve = (covered[None, :] & (closest_radius[None, :] <= synthetic_radii[:, None])).mean(axis=1)

    synthetic_to_real, nearest_real = real_index.kneighbors(synthetic, 1)
    authentic = synthetic_to_real[:, 0] > real_to_real[nearest_real[:, 0]]
    total = GRID.sum()
    return [ALPHA_PRECISION.result(max(0.0, 1.0 - np.abs(GRID - precision_curve).sum() / total)),
            BETA_RECALL.result(max(0.0, 1.0 - np.abs(GRID - recall_curve).sum() / total)),
            AUTHENTICITY.result(authentic.mean(), n_inauthentic=int((~authentic).sum()))]
