"""Affine calibration of a trained judge's expected score, fitted on the validation split.

Why: the expected-reward objective with the quadratic reward, E_pi[r] = 1 - (Var_pi[k] + (E_pi[k] - s)^2) / 81,
punishes a spread distribution only through Var_pi / 81, and the KL term pulls toward the (spread) reference,
so a trained judge keeps ~1.3 nats of entropy and its expected score E_pi[k] is compressed toward the middle
of the scale (measured 2026-12-01: judge std 2.08 vs score std 2.89 on test, mean gap -0.38). A least-squares
line calibrated = a * E_pi[k] + b (a > 0) fitted on validation records undoes the compression:
  * it is strictly increasing, so Spearman is unchanged and Pearson is unchanged up to the clip to [1, 10];
  * least squares with an intercept makes the mean residual zero on the records it was fitted on, so the mean
    gap on records like them (test) goes to ~0 and the MAE drops.
Fitted on `val` only (never on test). Saved beside the checkpoint as calibration.json; ehrjudge judge,
evaluate-judge, the pipeline's evaluation and (optionally) the gate report the calibrated score next to the
raw expected score, never instead of it.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from pathlib import Path

import numpy as np

from ehrjudge.errors import InputError
from ehrjudge.io import write_json

log = logging.getLogger(__name__)
FILE = "calibration.json"
LOW, HIGH = 1.0, 10.0


@dataclasses.dataclass(frozen=True)
class Calibration:
    slope: float  # a > 0
    intercept: float  # b
    n: int  # validation records it was fitted on
    fitted_on: str  # e.g. "val (199 records) at step 267"

    def __call__(self, expected_score) -> np.ndarray:
        """calibrated = clip(a * expected + b, 1, 10)."""
        return np.clip(self.slope * np.asarray(expected_score, dtype=float) + self.intercept, LOW, HIGH)


def fit_calibration(expected_score, targets, fitted_on: str) -> Calibration | None:
    """The least-squares line targets ~ a * expected + b, or None when it would not be increasing.

    None (with a warning) when the judge's scores do not vary or the fitted slope is <= 0: an affine map with
    a <= 0 would reverse or erase the judge's ranking, which is not a calibration.
    """
    x, y = np.asarray(expected_score, dtype=float), np.asarray(targets, dtype=float)
    if x.shape != y.shape or x.ndim != 1 or len(x) < 3:
        raise InputError(f"calibration needs two equal-length 1-d arrays of >= 3 values, got {x.shape} and {y.shape}")
    if not (np.isfinite(x).all() and np.isfinite(y).all()):
        raise InputError("calibration inputs contain NaN or inf")
    centered = x - x.mean()
    variance = float(centered @ centered)
    if variance <= 1e-12 * len(x):
        log.warning("no calibration: the judge's expected score is constant on %s", fitted_on)
        return None
    slope = float(centered @ (y - y.mean()) / variance)
    if slope <= 0:
        log.warning("no calibration: the fitted slope %.3f on %s is not positive (the judge ranks against the "
                    "score)", slope, fitted_on)
        return None
    return Calibration(slope, float(y.mean() - slope * x.mean()), int(len(x)), fitted_on)


def save_calibration(calibration: Calibration | None, directory: str | Path) -> None:
    """Write DIR/calibration.json (atomically), or remove a stale one when there is no calibration."""
    path = Path(directory) / FILE
    if calibration is None:
        path.unlink(missing_ok=True)
        return
    write_json(path, dataclasses.asdict(calibration))


def saved_calibration(model_dir: str | Path | None) -> Calibration | None:
    """The calibration saved with a judge checkpoint, or None when it has none (e.g. a base model or hub id)."""
    if model_dir is None:
        return None
    path = Path(model_dir) / FILE
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text())
        calibration = Calibration(float(data["slope"]), float(data["intercept"]), int(data["n"]),
                                  str(data["fitted_on"]))
    except (json.JSONDecodeError, KeyError, TypeError, ValueError) as error:
        raise InputError(f"unreadable calibration file: {error}", file=path) from error
    if not (np.isfinite(calibration.slope) and np.isfinite(calibration.intercept)) or calibration.slope <= 0:
        raise InputError(f"calibration slope must be finite and > 0, got {calibration.slope}", file=path)
    return calibration
