"""Sparsity: non-zero code columns (NZC, as reported for medGAN-style EHR generators) and the share of zeros.

    nzc_coverage    share of the code columns non-zero somewhere in the real set that are also non-zero
                    somewhere in the synthetic set (a generator that drops rare codes loses coverage)
    nzc_extra_rate  share of the synthetic set's non-zero code columns that are all-zero in the real set
    zero_share_abs_diff  |share of zero cells, real - synthetic| over the code columns
Code columns are the schema features carrying a `code` (diagnosis, procedure, drug, lab item counts).
"""

from __future__ import annotations

import numpy as np

from ehrjudge.cohort.schema import Schema
from ehrjudge.errors import MetricUndefinedError
from ehrjudge.scoring.metric import Metric

COVERAGE = Metric("sparsity/nzc_coverage", "maximize", 0.0, 1.0,
                  "share of real non-zero code columns also non-zero in the synthetic set")
EXTRA = Metric("sparsity/nzc_extra_rate", "minimize", 0.0, 1.0,
               "share of synthetic non-zero code columns that are always zero in the real set")
ZERO_SHARE = Metric("sparsity/zero_share_abs_diff", "minimize", 0.0, 1.0,
                    "absolute difference of the share of zero cells in code columns")


def sparsity_metrics(real: np.ndarray, synthetic: np.ndarray, schema: Schema) -> list[dict]:
    codes = np.array([f.code is not None for f in schema.features])
    if not codes.any():
        raise MetricUndefinedError("the schema has no code columns")
    real_nonzero = (real[:, codes] != 0).any(axis=0)
    synthetic_nonzero = (synthetic[:, codes] != 0).any(axis=0)
    if not real_nonzero.any():
        raise MetricUndefinedError("every code column is zero in the real set")
    nzc_real, nzc_synthetic = int(real_nonzero.sum()), int(synthetic_nonzero.sum())
    coverage = (real_nonzero & synthetic_nonzero).sum() / nzc_real
    extra = (synthetic_nonzero & ~real_nonzero).sum() / nzc_synthetic if nzc_synthetic else 0.0
    zero_real, zero_synthetic = float((real[:, codes] == 0).mean()), float((synthetic[:, codes] == 0).mean())
    details = {"nzc_real": nzc_real, "nzc_synthetic": nzc_synthetic, "n_code_columns": int(codes.sum())}
    return [
        COVERAGE.result(coverage, **details),
        EXTRA.result(extra, **details),
        ZERO_SHARE.result(abs(zero_real - zero_synthetic), zero_share_real=zero_real,
                          zero_share_synthetic=zero_synthetic),
    ]
