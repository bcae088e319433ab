"""Agreement between judge scores and the verifiable realism score (reused by baseline, training eval, pipeline).

Metrics, direction and range:
    pearson, spearman   higher is better, [-1, 1]; 95% percentile-bootstrap intervals over record pairs
                        (scipy.stats.bootstrap, paired resampling, seeded)
    mae                 lower is better, [0, 9] for 1..10 scores: mean |judge - true|
    exact, within_1     higher is better, [0, 1]: share with judge == true, |judge - true| <= 1
A correlation of a constant series is undefined: `correlation_with_interval` raises MetricUndefinedError, and
`agreement` records the reason under "undefined" with the value None (never a silent NaN).
"""

from __future__ import annotations

import numpy as np
from scipy import stats

from ehrjudge.errors import InputError, MetricUndefinedError

CORRELATIONS = ("pearson", "spearman")


def _pearson_along_last(x: np.ndarray, y: np.ndarray, axis: int = -1) -> np.ndarray:
    x = x - x.mean(axis=axis, keepdims=True)
    y = y - y.mean(axis=axis, keepdims=True)
    denominator = np.sqrt((x * x).sum(axis=axis) * (y * y).sum(axis=axis))
    with np.errstate(invalid="ignore", divide="ignore"):
        return (x * y).sum(axis=axis) / denominator


def _spearman_along_last(x: np.ndarray, y: np.ndarray, axis: int = -1) -> np.ndarray:
    # Spearman's rho = Pearson correlation of the (average-tie) ranks.
    return _pearson_along_last(stats.rankdata(x, axis=axis), stats.rankdata(y, axis=axis), axis=axis)


_STATISTICS = {"pearson": _pearson_along_last, "spearman": _spearman_along_last}


def correlation(kind: str, judge: np.ndarray, true: np.ndarray) -> float:
    """A Pearson or Spearman correlation; MetricUndefinedError when either series is constant."""
    if kind not in _STATISTICS:
        raise ValueError(f"unknown correlation {kind!r}")
    if np.ptp(judge) == 0 or np.ptp(true) == 0:
        which = "judge" if np.ptp(judge) == 0 else "true"
        raise MetricUndefinedError(f"{kind}: the {which} scores are constant ({judge[0] if which == 'judge' else true[0]})")
    return float(_STATISTICS[kind](np.asarray(judge, dtype=float), np.asarray(true, dtype=float)))


def correlation_with_interval(kind: str, judge: np.ndarray, true: np.ndarray, seed: int = 0,
                              n_bootstrap: int = 1000, level: float = 0.95) -> tuple[float, float, float]:
    """(value, low, high) of a Pearson or Spearman correlation with its percentile-bootstrap interval."""
    value = correlation(kind, judge, true)
    statistic = _STATISTICS[kind]
    result = stats.bootstrap((judge, true), statistic, paired=True, vectorized=True, n_resamples=n_bootstrap,
                             confidence_level=level, method="percentile", rng=np.random.default_rng(seed))
    low, high = float(result.confidence_interval.low), float(result.confidence_interval.high)
    if not (np.isfinite(low) and np.isfinite(high)):
        raise MetricUndefinedError(f"{kind}: bootstrap resamples with constant scores; interval undefined")
    return value, low, high


def resampled_correlations(kind: str, judge: np.ndarray, true: np.ndarray, rng: np.random.Generator,
                           n_bootstrap: int) -> np.ndarray:
    """(n_bootstrap,) correlations over paired resamples of the records; NaN where a resample is constant.

    For statistics of several correlations at once (e.g. a mean over folds, resampled within each fold)."""
    if kind not in _STATISTICS:
        raise ValueError(f"unknown correlation {kind!r}")
    judge, true = np.asarray(judge, dtype=float), np.asarray(true, dtype=float)
    rows = rng.integers(len(judge), size=(n_bootstrap, len(judge)))  # (B, n)
    return _STATISTICS[kind](judge[rows], true[rows])


def agreement(judge_scores, true_scores, seed: int = 0, n_bootstrap: int = 1000) -> dict:
    """Correlations with 95% intervals, MAE, exact and within-1 agreement, and both series' mean/std."""
    judge = np.asarray(judge_scores, dtype=float)
    true = np.asarray(true_scores, dtype=float)
    if judge.shape != true.shape or judge.ndim != 1:
        raise InputError(f"judge and true scores must be 1-D and of equal length, got {judge.shape} and {true.shape}")
    if len(judge) < 3:
        raise MetricUndefinedError(f"agreement needs at least 3 records, got {len(judge)}")
    if not (np.isfinite(judge).all() and np.isfinite(true).all()):
        raise InputError("scores contain NaN or infinite values")
    difference = np.abs(judge - true)
    out: dict = {"n": int(len(judge))}
    undefined = {}
    for kind in CORRELATIONS:
        try:
            value, low, high = correlation_with_interval(kind, judge, true, seed=seed, n_bootstrap=n_bootstrap)
        except MetricUndefinedError as exc:
            value, low, high = None, None, None
            undefined[kind] = str(exc)
        out[kind], out[f"{kind}_ci"] = value, (None if value is None else [low, high])
    out.update({
        "mae": float(difference.mean()),
        "exact": float((difference == 0).mean()),
        "within_1": float((difference <= 1).mean()),
        "judge_mean": float(judge.mean()), "judge_std": float(judge.std(ddof=1)),
        "true_mean": float(true.mean()), "true_std": float(true.std(ddof=1)),
        "undefined": undefined,
    })
    return out
