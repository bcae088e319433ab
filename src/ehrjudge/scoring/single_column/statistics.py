"""Dimension-wise distribution: per-feature mean, variance and zero rate, real vs synthetic.

Summaries over features (p = number of features):
    mean_abs_diff        (1/p) sum_j |mean_r_j - mean_s_j| / sd_r_j   (sd_r_j = 1 where the real column is constant)
    variance_log_ratio   (1/p) sum_j |log((var_s_j + e) / (var_r_j + e))|, e = 1e-8
    zero_rate_abs_diff   (1/p) sum_j |zero_r_j - zero_s_j|
    prevalence_correlation  Pearson r between per-feature prevalence (share of non-zero records), real vs synthetic
                            (the dimension-wise probability plot of medGAN, Choi et al. 2017, as one number)
"""

from __future__ import annotations

import numpy as np

from ehrjudge.errors import MetricUndefinedError
from ehrjudge.scoring.metric import Metric

EPS = 1e-8
MEAN = Metric("dimension/mean_abs_diff", "minimize", 0.0, None,
              "mean over features of |mean difference| in real standard deviations")
VARIANCE = Metric("dimension/variance_log_ratio", "minimize", 0.0, None,
                  "mean over features of |log(variance ratio)|")
ZERO_RATE = Metric("dimension/zero_rate_abs_diff", "minimize", 0.0, 1.0,
                   "mean over features of |zero-rate difference|")
PREVALENCE = Metric("dimension/prevalence_correlation", "maximize", -1.0, 1.0,
                    "Pearson correlation of per-feature prevalence (share non-zero), real vs synthetic")


def feature_table(real: np.ndarray, synthetic: np.ndarray, names: list[str]) -> list[dict]:
    """Per feature: mean, variance and zero rate in the real and the synthetic set."""
    stats = {
        "mean_real": real.mean(axis=0), "mean_synthetic": synthetic.mean(axis=0),
        "var_real": real.var(axis=0), "var_synthetic": synthetic.var(axis=0),
        "zero_rate_real": (real == 0).mean(axis=0), "zero_rate_synthetic": (synthetic == 0).mean(axis=0),
    }
    return [{"feature": name, **{key: float(values[j]) for key, values in stats.items()}}
            for j, name in enumerate(names)]


def dimension_metrics(real: np.ndarray, synthetic: np.ndarray, names: list[str]) -> list[dict]:
    sd_real = real.std(axis=0)
    sd_real = np.where(sd_real > 0, sd_real, 1.0)
    mean_diff = np.abs(real.mean(axis=0) - synthetic.mean(axis=0)) / sd_real
    log_ratio = np.abs(np.log((synthetic.var(axis=0) + EPS) / (real.var(axis=0) + EPS)))
    zero_diff = np.abs((real == 0).mean(axis=0) - (synthetic == 0).mean(axis=0))
    worst = names[int(np.argmax(mean_diff))]
    results = [
        MEAN.result(mean_diff.mean(), worst_feature=worst, worst_value=float(mean_diff.max())),
        VARIANCE.result(log_ratio.mean(), worst_feature=names[int(np.argmax(log_ratio))]),
        ZERO_RATE.result(zero_diff.mean(), worst_feature=names[int(np.argmax(zero_diff))]),
    ]
    return results


def prevalence_metrics(real: np.ndarray, synthetic: np.ndarray) -> list[dict]:
    prevalence_real, prevalence_synthetic = (real != 0).mean(axis=0), (synthetic != 0).mean(axis=0)
    if np.ptp(prevalence_real) == 0 or np.ptp(prevalence_synthetic) == 0:
        raise MetricUndefinedError("per-feature prevalence is constant in one set; correlation undefined")
    return [PREVALENCE.result(np.corrcoef(prevalence_real, prevalence_synthetic)[0, 1])]
