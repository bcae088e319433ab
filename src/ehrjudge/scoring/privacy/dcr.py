"""Distance to closest record (DCR) and nearest-neighbour distance ratio (NNDR) against the holdout: are synthetic
records closer to the reference patients than new real patients are? (Park et al. 2018; Zhao et al. 2021, CTAB-GAN;
synthcity's DCR metrics). Distances in reference-standardized columns.

    close_share = share of synthetic records whose DCR is below the 5th percentile of held-out real DCRs
                  (real-like: 0.05; copies: 1)
    dcr_ratio   = median synthetic DCR / median held-out DCR        (real-like: 1; copies: 0)
    nndr        = median over synthetic records of d_1 / d_2 (nearest over second-nearest reference record);
                  small = near one particular patient
"""

from __future__ import annotations

import numpy as np

from ehrjudge.errors import MetricUndefinedError
from ehrjudge.scoring.knn import ExactKNN
from ehrjudge.scoring.metric import Metric
from ehrjudge.scoring.privacy.membership import standardizer

CLOSE_SHARE = Metric("privacy/dcr_close_share", "minimize", 0.0, 1.0,
                     "share of synthetic records closer to a reference patient than 95 % of held-out patients are "
                     "(0.05 for real-like data)")
DCR_RATIO = Metric("privacy/dcr_ratio", "maximize", 0.0, None,
                   "median distance to closest record, synthetic over held-out real (1 = as private as new patients)")
NNDR = Metric("privacy/nndr_median", "maximize", 0.0, 1.0,
              "median nearest / second-nearest reference distance of synthetic records (held-out in details)")


def dcr_metrics(reference: np.ndarray, holdout: np.ndarray, synthetic: np.ndarray, chunk_size: int = 2048
                ) -> list[dict]:
    if len(reference) < 2 or len(holdout) < 2:
        raise MetricUndefinedError("DCR needs at least 2 reference and 2 held-out records")
    scale = standardizer(reference)
    index = ExactKNN(scale(reference), chunk_size)
    synthetic_d, _ = index.kneighbors(scale(synthetic), 2)  # (n, 2)
    holdout_d, _ = index.kneighbors(scale(holdout), 2)
    holdout_median = float(np.median(holdout_d[:, 0]))
    if not holdout_median > 0:
        raise MetricUndefinedError("held-out records coincide with reference records (median DCR 0)")
    threshold = float(np.percentile(holdout_d[:, 0], 5))
    ratio = lambda d: np.divide(d[:, 0], d[:, 1], out=np.ones(len(d)), where=d[:, 1] > 0)  # noqa: E731
    return [CLOSE_SHARE.result((synthetic_d[:, 0] < threshold).mean(), threshold=threshold),
            DCR_RATIO.result(np.median(synthetic_d[:, 0]) / holdout_median, holdout_median_dcr=holdout_median),
            NNDR.result(np.median(ratio(synthetic_d)), holdout_nndr_median=float(np.median(ratio(holdout_d))))]
