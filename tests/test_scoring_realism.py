"""The seed realism score (definition: seed): distances against scipy / scikit-learn, mappings, near copies,
determinism, bad input."""

import functools
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy.spatial.distance import cdist
from scipy.spatial.distance import mahalanobis as scipy_mahalanobis
from sklearn.covariance import OAS, LedoitWolf
from sklearn.neighbors import NearestNeighbors

from ehrjudge.cohort.schema import Cohort, FeatureSpec, Schema
from ehrjudge.config import load_config
from ehrjudge.errors import ConfigError, InputError
from ehrjudge.scoring.knn import ExactKNN
from ehrjudge.scoring.mahalanobis import ledoit_wolf
from ehrjudge.scoring.mapping import linear_score
from ehrjudge.scoring.realism import SEED_COLUMNS, RealismScorer, ScoreConfig, score_records

SeedConfig = functools.partial(ScoreConfig, definition="seed")


def count_data(n: int, p: int, seed: int) -> np.ndarray:
    """Sparse-ish correlated counts: a per-patient activity level times decaying column rates."""
    rng = np.random.default_rng(seed)
    activity = rng.gamma(2.0, 0.5, size=(n, 1))
    rates = np.exp(np.linspace(-3.5, 0.5, p))[None, :] * activity
    return rng.poisson(rates).astype(float)


def make_cohort(matrix: np.ndarray, id_column: str = "subject_id") -> Cohort:
    names = [f"dx_{j:03d}" for j in range(matrix.shape[1])]
    schema = Schema([FeatureSpec(n, "diagnoses", "count", n, code=n) for n in names], source="test")
    vectors = pd.DataFrame(matrix, columns=names)
    vectors.insert(0, id_column, [f"{id_column[0]}{i}" for i in range(len(matrix))])
    return Cohort(vectors, schema)


def standardized(scorer: RealismScorer, matrix: np.ndarray) -> np.ndarray:
    used = ~scorer.fitted_.constant_
    return (matrix[:, used] - scorer.fitted_.mean_[used]) / scorer.fitted_.scale_


@pytest.mark.parametrize("method, estimator", [("ledoit_wolf", LedoitWolf), ("oas", OAS)])
def test_mahalanobis_matches_scipy_with_the_same_shrunk_covariance(method, estimator):
    # Setup
    reference, holdout, records = count_data(300, 40, 1), count_data(60, 40, 2), count_data(25, 40, 3)
    scorer = RealismScorer(SeedConfig(covariance=method, mahalanobis_precision="float64")).fit(reference, holdout)
    z_reference = standardized(scorer, reference)
    covariance = estimator(assume_centered=True).fit(z_reference).covariance_
    # Back in raw units: Sigma_raw = D Sigma D with D = diag(std), centred on the reference mean.
    scale = np.diag(scorer.fitted_.scale_)
    inverse_raw = np.linalg.inv(scale @ covariance @ scale)
    used = ~scorer.fitted_.constant_
    # Run
    scores = scorer.score(records)
    expected = [scipy_mahalanobis(row[used], scorer.fitted_.mean_[used], inverse_raw) for row in records]
    # Assert
    np.testing.assert_allclose(scores["mahalanobis"], expected, rtol=1e-9)


def test_knn_matches_sklearn_brute_force():
    # Setup: chunk size smaller than the query set so several chunks run
    reference, holdout, records = count_data(400, 60, 4), count_data(80, 60, 5), count_data(130, 60, 6)
    scorer = RealismScorer(SeedConfig(k=5, chunk_size=32)).fit(reference, holdout)
    nn = NearestNeighbors(n_neighbors=5, algorithm="brute").fit(standardized(scorer, reference))
    # Run
    scores = scorer.score(records)
    expected, _ = nn.kneighbors(standardized(scorer, records))
    # Assert
    np.testing.assert_allclose(scores["knn_distance"], expected.mean(axis=1), rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(scores["nn_distance"], expected[:, 0], rtol=1e-9, atol=1e-12)


def test_exact_knn_survives_near_ties_and_duplicates():
    # Setup: duplicated reference rows, queries equidistant from several, large norms (float32 ties)
    rng = np.random.default_rng(7)
    base = rng.normal(size=(50, 30)) * 1e3
    reference = np.vstack([base, base, base + 1e-6])
    queries = np.vstack([base[:20] + 1e-7, rng.normal(size=(20, 30)) * 1e3])
    # Run
    distances, indices = ExactKNN(reference, chunk_size=7).kneighbors(queries, 4)
    # scipy's cdist works on differences; sklearn's expansion loses ~1e-4 to cancellation at this scale.
    expected = np.sort(cdist(queries, reference), axis=1)[:, :4]
    # Assert
    np.testing.assert_allclose(distances, expected, rtol=1e-9, atol=1e-12)
    recomputed = np.linalg.norm(queries[:, None, :] - reference[indices], axis=2)
    np.testing.assert_allclose(distances, recomputed, rtol=1e-12, atol=1e-9)


def test_exact_knn_falls_back_to_float64_when_float32_cannot_separate_neighbours():
    # Setup: 40 references on a shell of radius ~10 around a far-away query, radii 1e-5 apart
    center = np.full(40, 1e3)
    radii = 10 + 1e-5 * np.random.default_rng(8).permutation(40)
    reference = center + np.diag(radii)
    queries = np.vstack([center, center + 0.5])
    index = ExactKNN(reference, chunk_size=4)
    # Run
    distances, indices = index.kneighbors(queries, 5)
    # Assert
    assert index.fallback_rows > 0
    np.testing.assert_allclose(distances, np.sort(cdist(queries, reference), axis=1)[:, :5], rtol=1e-12)
    np.testing.assert_array_equal(indices[0], np.argsort(radii)[:5])


def test_float32_screened_knn_equals_sklearn_on_counts_with_near_ties():
    # Setup: standardized counts (many rows at equal or near-equal distances), both GEMM paths
    rng = np.random.default_rng(12)
    reference = count_data(500, 80, 13)
    reference = np.vstack([reference, reference[:50] + 1e-9 * rng.normal(size=(50, 80))])  # near-ties
    queries = np.vstack([count_data(150, 80, 14), reference[:20] + 1e-7])
    z_reference = (reference - reference.mean(axis=0)) / reference.std(axis=0)
    z_queries = (queries - reference.mean(axis=0)) / reference.std(axis=0)
    expected = np.sort(cdist(z_queries, z_reference), axis=1)[:, :5]
    numpy_index = ExactKNN(z_reference, chunk_size=37)
    numpy_index._product._onednn = None
    # Run
    results = [index.kneighbors(z_queries, 5) for index in (ExactKNN(z_reference, chunk_size=37), numpy_index)]
    # Assert: distances are the float64 ones, whichever float32 GEMM screened
    for distances, indices in results:
        np.testing.assert_allclose(distances, expected, rtol=1e-12, atol=1e-12)
        recomputed = np.linalg.norm(z_queries[:, None, :] - z_reference[indices], axis=2)
        np.testing.assert_allclose(distances, recomputed, rtol=1e-12, atol=1e-12)


def test_float32_screened_knn_returns_sklearn_neighbours_when_there_are_no_ties():
    # Setup
    reference, queries = np.random.default_rng(15).normal(size=(2, 400, 50))
    # Run
    distances, indices = ExactKNN(reference, chunk_size=64).kneighbors(queries, 5)
    expected_distances, expected_indices = NearestNeighbors(n_neighbors=5, algorithm="brute").fit(
        reference).kneighbors(queries)
    # Assert
    np.testing.assert_array_equal(indices, expected_indices)
    np.testing.assert_allclose(distances, expected_distances, rtol=1e-10)


def test_ledoit_wolf_equals_sklearn():
    # Setup
    rng = np.random.default_rng(16)
    centered = rng.normal(size=(120, 30)) @ rng.normal(size=(30, 30))
    centered -= centered.mean(axis=0)
    # Run
    covariance, shrinkage = ledoit_wolf(centered)
    expected = LedoitWolf(assume_centered=True).fit(centered)
    # Assert
    assert shrinkage == pytest.approx(expected.shrinkage_, rel=1e-12)
    np.testing.assert_allclose(covariance, expected.covariance_, rtol=1e-12, atol=1e-14)


def test_float32_mahalanobis_is_within_the_stated_tolerance_of_scipy():
    # Setup
    reference, holdout, records = count_data(400, 60, 17), count_data(80, 60, 18), count_data(200, 60, 19)
    scorer = RealismScorer(SeedConfig(mahalanobis_precision="float32")).fit(reference, holdout)
    inverse = np.linalg.inv(LedoitWolf(assume_centered=True).fit(standardized(scorer, reference)).covariance_)
    # Run
    distances = scorer.score(records)["mahalanobis"].to_numpy()
    expected = [scipy_mahalanobis(row, np.zeros(len(row)), inverse) for row in standardized(scorer, records)]
    # Assert: d^2 within 1e-5 relative, i.e. d within 5e-6
    np.testing.assert_allclose(distances, expected, rtol=5e-6)


def test_scores_are_byte_identical_across_runs(tmp_path):
    # Setup
    reference, holdout, records = count_data(300, 40, 20), count_data(60, 40, 21), count_data(500, 40, 22)
    # Run
    for precision in ("float64", "float32"):
        texts = [RealismScorer(SeedConfig(chunk_size=64, mahalanobis_precision=precision)).fit(reference, holdout)
                 .score(records).to_csv(index=False) for _ in range(2)]
        # Assert
        assert texts[0] == texts[1]


def test_fitted_scorer_pickles_and_scores_the_same():
    """The scale-out recipe in docs/scoring.md ships the fitted scorer to workers by pickling it."""
    import pickle

    # Setup
    reference, holdout, records = count_data(200, 30, 23), count_data(50, 30, 24), count_data(40, 30, 25)
    scorer = RealismScorer(SeedConfig()).fit(reference, holdout)
    # Run
    copied = pickle.loads(pickle.dumps(scorer))
    # Assert
    pd.testing.assert_frame_equal(copied.score(records), scorer.score(records))


def test_linear_score_anchors_in_both_directions():
    # Setup
    distances = np.array([0.0, 1.0, 2.5, 4.0, 9.0])
    # Run
    closer_is_better = linear_score(distances, at_one=4.0, at_ten=1.0)
    further_is_better = linear_score(distances, at_one=0.0, at_ten=2.0)
    # Assert
    np.testing.assert_allclose(closer_is_better, [10, 10, 5.5, 1, 1])
    np.testing.assert_allclose(further_is_better, [1, 5.5, 10, 10, 10])


def test_held_out_real_scores_high_and_noise_scores_lower_step_by_step():
    # Setup
    reference, holdout, fresh = count_data(600, 50, 8), count_data(150, 50, 9), count_data(150, 50, 10)
    rng = np.random.default_rng(11)
    scorer = RealismScorer(SeedConfig()).fit(reference, holdout)
    # Run
    means = [scorer.score(np.abs(fresh + rng.normal(0, s, fresh.shape)))["realism_continuous"].mean()
             for s in (0.0, 1.0, 3.0)]
    # Assert: real-like records score ~9+, and the score falls monotonically with the noise
    assert means[0] > 8.5
    assert means[0] > means[1] > means[2]
    assert means[2] < 4


def test_scores_are_bounded_and_combine_as_documented():
    # Setup
    reference, holdout = count_data(200, 20, 12), count_data(50, 20, 13)
    records = np.vstack([count_data(30, 20, 14), count_data(30, 20, 15) * 50])
    config = SeedConfig(w_maha=0.85, w_knn=0.15)
    # Run
    scores = RealismScorer(config).fit(reference, holdout).score(records)
    # Assert
    assert list(scores.columns) == SEED_COLUMNS
    recombined = 0.85 * scores["s_maha"] + 0.15 * scores["s_knn"]
    np.testing.assert_allclose(scores["realism_continuous"], recombined)
    assert scores["realism_continuous"].between(1, 10).all()
    assert set(scores["realism_score"]) <= set(range(1, 11))
    np.testing.assert_array_equal(scores["realism_score"], np.floor(scores["realism_scaled"] + 0.5))
    floor = (0.85 * 1 + 0.15 * 10) / (0.85 + 0.15)
    np.testing.assert_allclose(scores["realism_scaled"],
                               np.clip(1 + 9 * (scores["realism_continuous"] - floor) / (10 - floor), 1, 10))
    assert scores["realism_score"].iloc[30:].max() < scores["realism_score"].iloc[:30].min()


def test_fixed_mapping_uses_per_column_anchors():
    # Setup
    reference, holdout, records = count_data(200, 16, 16), count_data(50, 16, 17), count_data(40, 16, 18)
    config = SeedConfig(mapping="fixed", maha_anchor_good=0.5, maha_anchor_bad=2.0,
                         knn_anchor_copy=0.0, knn_anchor_private=0.25, offsupport_penalty=0.0)
    # Run
    scores = RealismScorer(config).fit(reference, holdout).score(records)
    # Assert
    per_column_maha = scores["mahalanobis"] / 4.0  # sqrt(16 columns)
    expected_maha = 1 + 9 * np.clip((per_column_maha - 2.0) / (0.5 - 2.0), 0, 1)
    expected_knn = 1 + 9 * np.clip(scores["knn_distance"] / 4.0 / 0.25, 0, 1)
    np.testing.assert_allclose(scores["s_maha"], expected_maha)
    np.testing.assert_allclose(scores["s_knn"], expected_knn)


def test_quantile_mapping_gives_median_holdout_record_ten_and_tail_eight():
    # Setup
    reference, holdout = count_data(400, 30, 19), count_data(101, 30, 20)
    config = SeedConfig(offsupport_penalty=0.0, w_knn=0.0)
    scorer = RealismScorer(config).fit(reference, holdout)
    # Run
    scores = scorer.score(holdout)
    # Assert
    median_row = np.argsort(scores["mahalanobis"].to_numpy())[50]
    tail_distance = np.quantile(scores["mahalanobis"], 0.95)
    tail_row = np.argmin(np.abs(scores["mahalanobis"].to_numpy() - tail_distance))
    assert scores["s_maha"].iloc[median_row] == pytest.approx(10.0)
    assert scores["s_maha"].iloc[tail_row] == pytest.approx(8.0, abs=0.15)
    assert (scores["s_maha"] >= 7.5).mean() > 0.9


def test_copied_records_are_near_copies_and_fresh_ones_rarely():
    # Setup
    reference, holdout, fresh = (np.random.default_rng(s).normal(size=(n, 12)) for s, n in
                                 ((21, 300), (22, 200), (23, 200)))
    scorer = RealismScorer(SeedConfig()).fit(reference, holdout)
    # Run
    copies = scorer.score(reference[:40])
    others = scorer.score(fresh)
    # Assert
    assert copies["near_copy"].all()
    np.testing.assert_allclose(copies["nn_distance"], 0.0, atol=1e-9)
    assert others["near_copy"].mean() < 0.12
    assert scorer.fitted_.near_copy_threshold_ == pytest.approx(
        np.percentile(NearestNeighbors(n_neighbors=1).fit(standardized(scorer, reference))
                      .kneighbors(standardized(scorer, holdout))[0][:, 0], 5))


def test_constant_reference_columns_are_dropped_and_counted():
    # Setup: column 0 is always zero in the reference
    reference, holdout, records = count_data(200, 10, 24), count_data(50, 10, 25), count_data(20, 10, 26)
    reference[:, 0] = 0.0
    holdout[:, 0] = 0.0
    records[:, 0] = 0.0
    records[:5, 0] = 3.0
    on = RealismScorer(SeedConfig(offsupport_penalty=2.0)).fit(reference, holdout)
    off = RealismScorer(SeedConfig(offsupport_penalty=0.0)).fit(reference, holdout)
    # Run
    penalized, plain = on.score(records), off.score(records)
    # Assert
    assert on.fitted_.constant_.tolist() == [True] + [False] * 9
    assert penalized["n_offsupport"].tolist() == [1] * 5 + [0] * 15
    np.testing.assert_allclose(penalized["mahalanobis"], plain["mahalanobis"])
    np.testing.assert_allclose(penalized["s_maha"], np.maximum(plain["s_maha"] - 2.0 * (np.arange(20) < 5), 1.0))


def test_chunked_scoring_equals_scoring_all_at_once():
    # Setup
    reference, holdout, records = count_data(300, 25, 27), count_data(60, 25, 28), count_data(97, 25, 29)
    whole = RealismScorer(SeedConfig(chunk_size=4096)).fit(reference, holdout)
    chunked = RealismScorer(SeedConfig(chunk_size=10)).fit(reference, holdout)
    # Run: each partition scored separately, as a cluster worker would, then concatenated
    at_once = whole.score(records)
    parts = pd.concat([chunked.score(records[i:i + 13]) for i in range(0, 97, 13)], ignore_index=True)
    # Assert
    pd.testing.assert_frame_equal(parts, at_once, rtol=1e-12, atol=1e-12)


def test_without_holdout_a_seeded_split_calibrates_deterministically():
    # Setup
    reference, records = count_data(250, 20, 30), count_data(40, 20, 31)
    # Run
    first = RealismScorer(SeedConfig(calibration_seed=3)).fit(reference)
    second = RealismScorer(SeedConfig(calibration_seed=3)).fit(reference)
    # Assert
    assert first.calibration_["n_calibration"] == 50 and first.calibration_["n_reference"] == 200
    pd.testing.assert_frame_equal(first.score(records), second.score(records), check_exact=True)


def test_score_records_puts_record_id_first():
    # Setup
    reference, holdout = make_cohort(count_data(120, 8, 32)), make_cohort(count_data(40, 8, 33))
    records = make_cohort(count_data(15, 8, 34), id_column="record_id").vectors
    # Run
    scores = score_records(reference, records, SeedConfig(), holdout)
    # Assert
    assert list(scores.columns) == ["record_id"] + SEED_COLUMNS
    assert scores["record_id"].tolist() == [f"r{i}" for i in range(15)]


def test_reference_smaller_than_k_is_an_input_error():
    # Setup
    reference, holdout = count_data(4, 6, 35), count_data(10, 6, 36)
    # Run / Assert
    with pytest.raises(InputError, match="fewer than k=5"):
        RealismScorer(SeedConfig(k=5)).fit(reference, holdout)


def test_non_finite_and_mismatched_records_are_located():
    # Setup
    reference, holdout = make_cohort(count_data(60, 5, 37)), make_cohort(count_data(20, 5, 38))
    records = make_cohort(count_data(6, 5, 39), id_column="record_id").vectors
    with_nan = records.copy()
    with_nan.loc[3, "dx_002"] = np.nan
    renamed = records.rename(columns={"dx_004": "dx_999"})
    # Run / Assert
    with pytest.raises(InputError, match=r"column 'dx_002', row 3"):
        score_records(reference, with_nan, SeedConfig(), holdout)
    with pytest.raises(InputError, match="schema mismatch"):
        score_records(reference, renamed, SeedConfig(), holdout)
    with pytest.raises(InputError, match="no synthetic records"):
        score_records(reference, records.iloc[:0], SeedConfig(), holdout)
    with pytest.raises(InputError, match="columns"):
        RealismScorer(SeedConfig()).fit(reference.matrix(), holdout.matrix()).score(np.ones((2, 4)))


def test_config_flags_and_bad_values():
    # Setup / Run
    config = load_config(ScoreConfig, None, ["--k", "3", "--mapping", "fixed", "--covariance=oas"])
    # Assert
    assert (config.k, config.mapping, config.covariance) == (3, "fixed", "oas")
    with pytest.raises(ConfigError):
        load_config(ScoreConfig, None, ["--mapping", "linear"])
    with pytest.raises(ConfigError):
        load_config(ScoreConfig, None, ["--w-maha", "0", "--w-knn", "0"])
    with pytest.raises(ConfigError):
        load_config(ScoreConfig, None, ["--neighbours", "3"])


def test_attainable_scale_reaches_both_ends():
    """Regression (lead, 04:15): with kNN capped at 10 the label 1 was unreachable (floor 2.35)."""
    from ehrjudge.scoring.realism import attainable_scale

    floor = 0.85 * 1 + 0.15 * 10
    np.testing.assert_allclose(attainable_scale(np.array([floor, 10.0, 1.0]), 0.85, 0.15), [1.0, 10.0, 1.0])
    np.testing.assert_allclose(attainable_scale(np.array([3.0]), 0.0, 1.0), [3.0])


def test_holdout_with_other_columns_is_rejected():
    # Setup
    reference = make_cohort(count_data(60, 5, 40))
    other = make_cohort(count_data(20, 6, 41))
    records = make_cohort(count_data(6, 5, 42), id_column="record_id").vectors
    # Run / Assert
    with pytest.raises(InputError, match="holdout cohort columns differ"):
        score_records(reference, records, SeedConfig(), other)


def test_scale_benchmark_runs_on_a_tiny_problem(tmp_path):
    # Setup: the benchmark script itself, shrunk to seconds
    script = Path(__file__).resolve().parent.parent / "benchmarks" / "score_scale.py"
    out = tmp_path / "score_scale.json"
    command = [sys.executable, str(script), "--synthetic", "300", "--reference", "200", "--holdout", "60",
               "--features", "40", "--chunk-size", "64", "--baseline", "full", "--out", str(out)]
    # Run
    completed = subprocess.run(command, capture_output=True, text=True)
    # Assert
    assert completed.returncode == 0, completed.stderr
    result = json.loads(out.read_text())
    assert result["synthetic_records"] == 300 and result["knn_baseline_records"] == 300
    assert result["knn_max_abs_difference_vs_sklearn"] < 1e-9
    assert "records/s" in completed.stdout
