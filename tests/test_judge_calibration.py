"""The affine calibration of the expected score: known answers, refusal of non-increasing fits, files."""

import json

import numpy as np
import pytest
from scipy import stats

from ehrjudge.errors import InputError
from ehrjudge.judge.calibration import Calibration, fit_calibration, save_calibration, saved_calibration


def test_exact_line_is_recovered():
    x = np.array([2.0, 3.0, 4.0, 5.0])
    calibration = fit_calibration(x, 2 * x - 1, "val")
    assert calibration.slope == pytest.approx(2.0) and calibration.intercept == pytest.approx(-1.0)
    assert calibration.n == 4 and calibration.fitted_on == "val"
    np.testing.assert_allclose(calibration(x), [3.0, 5.0, 7.0, 9.0])
    np.testing.assert_allclose(calibration([0.0, 6.0]), [1.0, 10.0])  # clipped to the label range


def test_noisy_fit_matches_polyfit_zeroes_the_mean_gap_and_keeps_the_ranking():
    rng = np.random.default_rng(0)
    truth = rng.integers(1, 11, 300).astype(float)
    compressed = 5.0 + 0.6 * (truth - 5.5) - 0.4 + rng.normal(0, 0.5, 300)  # squeezed and biased low
    calibration = fit_calibration(compressed, truth, "val")
    slope, intercept = np.polyfit(compressed, truth, 1)
    assert calibration.slope == pytest.approx(slope) and calibration.intercept == pytest.approx(intercept)
    unclipped = calibration.slope * compressed + calibration.intercept
    assert unclipped.mean() == pytest.approx(truth.mean())
    assert abs(compressed.mean() - truth.mean()) > 0.3
    assert stats.spearmanr(unclipped, truth)[0] == pytest.approx(stats.spearmanr(compressed, truth)[0])
    assert np.abs(calibration(compressed) - truth).mean() < np.abs(compressed - truth).mean()


def test_decreasing_or_constant_judge_gets_no_calibration():
    x = np.array([1.0, 2.0, 3.0, 4.0])
    assert fit_calibration(x, -x, "val") is None
    assert fit_calibration(np.full(4, 5.0), x, "val") is None
    with pytest.raises(InputError):
        fit_calibration(x, x[:3], "val")
    with pytest.raises(InputError):
        fit_calibration(np.array([1.0, np.nan, 3.0]), np.ones(3), "val")


def test_saved_calibration_round_trip_and_bad_files(tmp_path):
    calibration = Calibration(1.25, -0.5, 199, "val (199 records) at step 10")
    save_calibration(calibration, tmp_path)
    assert saved_calibration(tmp_path) == calibration
    save_calibration(None, tmp_path)  # a fit that failed later must not leave the old map behind
    assert saved_calibration(tmp_path) is None and saved_calibration(None) is None
    (tmp_path / "calibration.json").write_text(json.dumps({"slope": -1.0, "intercept": 0.0, "n": 3, "fitted_on": "v"}))
    with pytest.raises(InputError, match="calibration.json"):
        saved_calibration(tmp_path)
    (tmp_path / "calibration.json").write_text("{not json")
    with pytest.raises(InputError, match="calibration.json"):
        saved_calibration(tmp_path)
