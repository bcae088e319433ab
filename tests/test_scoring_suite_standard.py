"""The standard suite metrics (detection, alpha-precision / beta-recall / authenticity, DCR / NNDR) on identical,
shifted and copied data: known answers at the ends of each range."""

import numpy as np
import pytest

from ehrjudge.errors import MetricUndefinedError
from ehrjudge.scoring.detection.logistic import detection_metrics
from ehrjudge.scoring.fidelity.alpha_precision import alpha_precision_metrics
from ehrjudge.scoring.privacy.dcr import dcr_metrics


def values(results: list[dict]) -> dict[str, float]:
    return {row["name"].split("/", 1)[1]: row["value"] for row in results}


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(0)
    draw = lambda n: rng.normal(size=(n, 6))  # noqa: E731 - one distribution for every set
    return {"reference": draw(400), "holdout": draw(200), "fresh": draw(300)}


def test_detection_is_chance_on_the_same_distribution_and_perfect_on_shifted_data(data):
    # Run
    same = values(detection_metrics(data["reference"], data["fresh"]))
    shifted = values(detection_metrics(data["reference"], data["fresh"] + 4.0))
    # Assert
    assert abs(same["logistic_auc"] - 0.5) < 0.08 and same["logistic_score"] > 0.84
    assert shifted["logistic_auc"] > 0.99 and shifted["logistic_score"] < 0.02


def test_alpha_precision_beta_recall_and_authenticity(data):
    # Run
    same = values(alpha_precision_metrics(data["reference"], data["fresh"]))
    shifted = values(alpha_precision_metrics(data["reference"], data["fresh"] + 4.0))
    copies = values(alpha_precision_metrics(data["reference"], data["reference"][:200]))
    # Assert: fresh draws are typical and diverse; far-shifted ones neither; copies are never authentic
    # (beta-recall of a fresh sample tops out near 0.4: only about half the real records have a synthetic one
    # closer than their own nearest real neighbour, so the curve reaches ~0.5, as in synthcity)
    assert same["alpha_precision"] > 0.85 and same["beta_recall"] > 0.3 and same["authenticity"] > 0.3
    assert shifted["alpha_precision"] < 0.1 and shifted["beta_recall"] < 0.1 and shifted["authenticity"] == 1.0
    assert copies["authenticity"] == 0.0


def test_dcr_against_the_holdout(data):
    # Run
    fresh = values(dcr_metrics(data["reference"], data["holdout"], data["fresh"]))
    copies = values(dcr_metrics(data["reference"], data["holdout"], data["reference"][:100]))
    # Assert
    assert fresh["dcr_close_share"] < 0.12 and 0.8 < fresh["dcr_ratio"] < 1.25
    assert copies["dcr_close_share"] == 1.0 and copies["dcr_ratio"] == 0.0 and copies["nndr_median"] == 0.0


def test_too_few_records_are_undefined():
    # Setup
    tiny = np.zeros((2, 3))
    # Run / Assert
    with pytest.raises(MetricUndefinedError):
        detection_metrics(tiny, tiny)
    with pytest.raises(MetricUndefinedError):
        alpha_precision_metrics(tiny, tiny)
