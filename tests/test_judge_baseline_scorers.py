"""The cheap scorers beside the judge (judge.baseline_scorers): the diagonal-z formula against hand-worked values."""

import numpy as np
import pytest
from scipy import stats

from ehrjudge.cohort.reference_stats import ReferenceStats
from ehrjudge.errors import InputError
from ehrjudge.judge.baseline_scorers import FormulaScorer, diagonal_z_distance, records_per_second

# Reference columns: a ~ {0, 2} (mean 1, std 1), b constant 1 (no z: left out), c ~ {0, 4} (mean 2, std 2).
REFERENCE = ReferenceStats(("a", "b", "c"), np.array([1.0, 1.0, 2.0]), np.array([1.0, 0.0, 2.0]))


def test_distance_matches_hand_computed_values():
    # Setup: z = (2, -, 0), (-1, -, 2), (0, -, 0), (-3, -, -1.5)
    records = np.array([[3.0, 5.0, 2.0], [0.0, 1.0, 6.0], [1.0, 1.0, 2.0], [-2.0, 9.0, -1.0]])
    # Run
    distance = diagonal_z_distance(records, REFERENCE)
    # Assert: the constant column b never counts, whatever the record holds there
    np.testing.assert_allclose(distance, [2.0, np.sqrt(5.0), 0.0, np.sqrt(9.0 + 2.25)], rtol=1e-12)


def test_distance_equals_reference_stats_z_scores():
    # Setup: the z the judge's deviations prompt shows (ReferenceStats.z_scores), on a random reference
    rng = np.random.default_rng(3)
    matrix = rng.normal(size=(50, 4)) * [1.0, 3.0, 0.5, 2.0]
    reference = ReferenceStats(("w", "x", "y", "z"), matrix.mean(axis=0), matrix.std(axis=0))
    records = rng.normal(size=(6, 4)) * 4
    # Run
    distance = diagonal_z_distance(records, reference)
    # Assert
    expected = [np.sqrt(sum(v**2 for v in reference.z_scores(dict(zip(reference.names, row))).values()))
                for row in records]
    np.testing.assert_allclose(distance, expected, rtol=1e-10)


def test_formula_map_is_the_increasing_line_fitted_on_val():
    # Setup: val scores exactly 9 - 2 log d, so the fitted line on -log d is a = 2, b = 9
    val = np.array([[1.0, 1.0, 2.0 + 2.0 * d] for d in (0.5, 1.0, 2.0, 4.0)])  # d = 0.5, 1, 2, 4
    val_scores = 9.0 - 2.0 * np.log([0.5, 1.0, 2.0, 4.0])
    records = np.array([[1.0, 1.0, 3.0], [4.0, 1.0, 2.0], [1.0, 1.0, 2.0 + 2e3]])  # d = 0.5, 3, 1000
    # Run
    scorer = FormulaScorer.fit(REFERENCE, val, val_scores)
    scores = scorer.score(records)
    # Assert
    assert scorer.calibration.slope == pytest.approx(2.0) and scorer.calibration.intercept == pytest.approx(9.0)
    np.testing.assert_allclose(scores, [min(10.0, 9 - 2 * np.log(0.5)), 9 - 2 * np.log(3.0), 1.0])
    assert scores[0] == 10.0 and scores[2] == 1.0  # clipped to 1..10


def test_formula_ranks_exactly_as_the_negated_distance():
    # Setup
    rng = np.random.default_rng(0)
    records = rng.normal(size=(40, 3)) * [2.0, 0.0, 3.0] + [1.0, 1.0, 2.0]
    val = rng.normal(size=(30, 3)) * 2 + [1.0, 1.0, 2.0]
    val_scores = 10.0 - diagonal_z_distance(val, REFERENCE)
    # Run
    scores = FormulaScorer.fit(REFERENCE, val, val_scores).score(records)
    distance = diagonal_z_distance(records, REFERENCE)
    # Assert: strictly decreasing in d before the clip, so Spearman with -d is 1 where nothing is clipped
    inside = (scores > 1) & (scores < 10)
    assert inside.sum() > 20
    assert stats.spearmanr(scores[inside], -distance[inside]).statistic == pytest.approx(1.0)


def test_distance_refuses_other_columns_and_an_all_constant_reference():
    with pytest.raises(InputError, match="reference has 3 columns"):
        diagonal_z_distance(np.zeros((2, 4)), REFERENCE)
    constant = ReferenceStats(("a",), np.array([2.0]), np.array([0.0]))
    with pytest.raises(InputError, match="every column is constant"):
        diagonal_z_distance(np.zeros((2, 1)), constant)


def test_records_per_second_returns_the_result_and_a_rate():
    result, rate = records_per_second(lambda m: m.sum(axis=1), np.ones((10, 3)))
    np.testing.assert_array_equal(result, np.full(10, 3.0))
    assert rate > 0


def test_facts_regressor_reads_the_findings_texts_numbers(tmp_path, caplog):
    """BaselineScorers fits the facts regressor on finding_facts of train (with the closest-patient ratio when the
    patients are attached) and scores any records with it; statistics without value domains leave it out, saying so."""
    import dataclasses

    from ehrjudge.cohort.schema import Schema
    from ehrjudge.judge.baseline_scorers import FACTS, BaselineScorers, facts_matrix, load_split
    from ehrjudge.judge.reference import dataset_reference
    from ehrjudge.train.tiny import tiny_dataset

    # Setup
    dataset = tiny_dataset(tmp_path / "data")
    schema = Schema.load(dataset / "reference" / "schema.json")
    reference = dataset_reference(dataset, "findings_dcr")
    records, _ = load_split(dataset, "test", schema)
    # Run
    cheap = BaselineScorers.fit(dataset, schema, reference)
    table, speed = cheap.score(records)
    # Assert: labels 1..10, timed, and the same as predicting on the facts directly
    assert table["facts_score"].between(1, 10).all() and speed[FACTS] > 0
    direct = np.clip(np.rint(cheap.facts.predict(facts_matrix(records, schema, reference))), 1, 10)
    np.testing.assert_array_equal(table["facts_score"].to_numpy(), direct)
    assert cheap.facts.n_features_in_ == facts_matrix(records, schema, dataclasses.replace(
        reference, patients=None)).shape[1] + 1  # the closest-patient ratio
    # Statistics written before value domains existed: no facts regressor, and a warning naming it
    old = dataclasses.replace(reference, minimum=None, maximum=None, floor_share=None)
    with caplog.at_level("WARNING"):
        assert BaselineScorers.fit(dataset, schema, old).facts is None
    assert "no facts regressor" in caplog.text
    assert "facts_score" not in BaselineScorers.fit(dataset, schema, old).score(records)[0]
