"""Agreement metrics against scipy and hand-worked values; the judge's per-record summary of a distribution."""

import math

import numpy as np
import pytest
from scipy import stats

from ehrjudge.errors import InputError, MetricUndefinedError
from ehrjudge.judge.agreement import agreement, correlation_with_interval
from ehrjudge.judge.scoring import summarize_distribution


def test_correlations_match_scipy_and_intervals_cover_them():
    # Setup
    rng = np.random.default_rng(0)
    true = rng.integers(1, 11, 300).astype(float)
    judge = np.clip(true + rng.integers(-3, 4, 300), 1, 10)
    # Run
    result = agreement(judge, true, seed=1, n_bootstrap=500)
    again = agreement(judge, true, seed=1, n_bootstrap=500)
    # Assert
    assert result["pearson"] == pytest.approx(stats.pearsonr(judge, true).statistic, abs=1e-12)
    assert result["spearman"] == pytest.approx(stats.spearmanr(judge, true).statistic, abs=1e-12)
    for kind in ("pearson", "spearman"):
        low, high = result[f"{kind}_ci"]
        assert low < result[kind] < high and high - low < 0.2
    assert result == again  # seeded
    assert result["undefined"] == {}


def test_hand_worked_error_and_agreement_rates():
    # Setup: differences 0, 1, 2, 0, 5
    true = [5, 5, 5, 1, 10]
    judge = [5, 6, 3, 1, 5]
    # Run
    result = agreement(judge, true, seed=0, n_bootstrap=200)
    # Assert
    assert result["mae"] == pytest.approx(8 / 5)
    assert result["exact"] == pytest.approx(2 / 5)
    assert result["within_1"] == pytest.approx(3 / 5)
    assert result["judge_mean"] == pytest.approx(4.0) and result["true_mean"] == pytest.approx(5.2)
    assert result["judge_std"] == pytest.approx(np.std(judge, ddof=1))


def test_constant_judge_scores_are_undefined_not_nan():
    # Setup
    true = np.arange(1, 11, dtype=float)
    judge = np.full(10, 3.0)
    # Run
    result = agreement(judge, true)
    # Assert
    assert result["pearson"] is None and result["spearman_ci"] is None
    assert "constant" in result["undefined"]["pearson"]
    assert result["mae"] == pytest.approx(np.abs(judge - true).mean())
    with pytest.raises(MetricUndefinedError):
        correlation_with_interval("spearman", judge, true)


def test_bad_inputs_raise():
    # Run / Assert
    with pytest.raises(InputError):
        agreement([1, 2, 3], [1, 2])
    with pytest.raises(InputError):
        agreement([1, 2, float("nan")], [1, 2, 3])
    with pytest.raises(MetricUndefinedError):
        agreement([1, 2], [1, 2])


def test_summary_of_a_label_distribution():
    # Setup: p_2 = 0.5, p_10 = 0.5
    probs = np.full((1, 10), 1e-300)
    probs[0, 1] = probs[0, 9] = 0.5
    # Run
    summary = summarize_distribution(np.log(probs / probs.sum()))
    # Assert
    assert summary.loc[0, "judge_score"] == 2  # argmax takes the first of tied labels
    assert summary.loc[0, "expected_score"] == pytest.approx(6.0)
    assert summary.loc[0, "entropy"] == pytest.approx(math.log(2), abs=1e-9)
    assert list(summary.columns) == ["judge_score", "expected_score", "entropy"] + [f"p_{k}" for k in range(1, 11)]
