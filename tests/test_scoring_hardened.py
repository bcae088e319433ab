"""The hardened realism score: known answers per component, the seed definition byte for byte, the probe command."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy.special import ndtri
from scipy.stats import spearmanr
from typer.testing import CliRunner

import ehrjudge.cli.scoring  # noqa: F401 - registers the commands on `app`
from ehrjudge.cli.app import app
from ehrjudge.cohort.schema import Cohort, FeatureSpec, Schema
from ehrjudge.scoring.hardened.normal_scores import NormalScores
from ehrjudge.scoring.hardened.rubric import Rubric
from ehrjudge.scoring.hardened.validity import Validity
from ehrjudge.scoring.realism import RealismScorer, ScoreConfig
from ehrjudge.scoring.single_table.rules import load_rules
from ehrjudge.synth.generators import generate

FIXTURE = Path(__file__).parent / "fixtures" / "seed_score"


@pytest.fixture(scope="module")
def cohort():
    return Cohort.load(FIXTURE / "reference"), Cohort.load(FIXTURE / "holdout")


@pytest.fixture(scope="module")
def scorer(cohort):
    reference, holdout = cohort
    return RealismScorer(ScoreConfig(), reference.schema).fit(reference.matrix(), holdout.matrix())


def test_normal_scores_are_mid_rank_inside_and_linear_outside():
    # Setup: levels 0 (x2), 1, 3 of 4 values; std 1.2247
    reference = np.array([[0.0], [0.0], [1.0], [3.0]])
    transform = NormalScores().fit(reference)
    # Run
    z = transform.transform(np.array([[0.0], [1.0], [2.0], [3.0], [5.0], [-1.0]]))[:, 0]
    # Assert: mid-rank CDFs 1/4, 5/8, 7/8; interpolation between levels; tails in SDs of the column
    expected_levels = ndtri([0.25, 0.625, 0.875])
    np.testing.assert_allclose(z[[0, 1, 3]], expected_levels)
    np.testing.assert_allclose(z[2], (expected_levels[1] + expected_levels[2]) / 2)
    std = reference.std()
    np.testing.assert_allclose(z[4], expected_levels[2] + 2.0 / std)
    np.testing.assert_allclose(z[5], expected_levels[0] - 1.0 / std)


def test_validity_flags_fractional_counts_binary_halves_and_floors():
    # Setup
    features = [FeatureSpec("gender", "demographics", "binary", "sex"),
                FeatureSpec("admissions_count", "admissions", "count", "admissions"),
                FeatureSpec("age", "demographics", "continuous", "age")]
    schema = Schema(features)
    reference = np.array([[0, 1, 30.0], [1, 2, 50.0], [1, 1, 70.0], [0, 4, 90.0]])
    validity = Validity(schema, range_margin=1.0, floor_mass=0.01).fit(reference)
    records = np.array([[1, 2, 60.0],    # valid
                        [0.5, 2, 60.0],  # binary 0.5
                        [1, 2.5, 60.0],  # fractional count
                        [1, 0, 60.0],    # below the admissions floor (every reference patient has >= 1)
                        [1, 2, 95.0],    # above the age range, within the margin: unusual
                        [1, 2, 200.0]])  # beyond the margin (90 + 60): invalid
    # Run
    checked = validity.check(records)
    # Assert
    assert checked["n_invalid"].tolist() == [0, 1, 1, 1, 0, 1]
    assert checked["n_unusual"].tolist() == [0, 0, 0, 0, 1, 0]
    assert checked["invalid_columns"].tolist() == ["", "gender", "admissions_count", "admissions_count", "", "age"]


def test_rubric_pass_is_the_weighted_share_of_applicable_rules(cohort):
    # Setup
    reference, _ = cohort
    rubric = Rubric(load_rules(), reference.schema)
    row = reference.matrix()[:1].copy()
    names = reference.schema.names
    broken = row.copy()
    broken[0, names.index("age")] = 130.0  # impossible_age (essential, weight 1)
    # Run
    clean, bad = rubric.check(row), rubric.check(broken)
    # Assert
    assert clean["rubric_pass"][0] == 1.0 and not clean["essential_violated"][0]
    assert bad["rule_violations"][0] == "impossible_age" and bad["essential_violated"][0]
    np.testing.assert_allclose(bad["rubric_pass"][0], 1.0 - 1.0 / rubric.weights.sum())
    assert "male_with_pregnancy_code" in [r["id"] for r in rubric.rules]  # "ICD10:Z34" matches the prefix "Z34"


def test_copies_are_capped_and_held_out_real_records_are_not_penalized(cohort, scorer):
    # Setup
    reference, holdout = cohort
    copies = reference.matrix()[:10]
    # Run
    copied, real = scorer.score(copies), scorer.score(holdout.matrix())
    # Assert: an exact copy scores at most 2, with the reason given
    assert copied["exact_copy"].all() and (copied["realism_continuous"] <= 2).all()
    assert copied["caps"].str.contains("near_copy").all()
    edited = copies.copy()
    edited[np.arange(10), np.arange(10) % copies.shape[1]] += 50.0 * reference.matrix().std(axis=0).max()
    one_cell = scorer.score(edited)  # a copy with one cell moved far: a near copy all the same (privacy.py)
    assert (one_cell["copy_ratio"] == 0).all() and (one_cell["nn_distance"] > scorer.fitted_.dcr_threshold_).all()
    assert (one_cell["realism_continuous"] <= 1.0).all() and one_cell["caps"].str.contains("near_copy").all()
    t = ScoreConfig().near_copy_free_cells
    varying = np.flatnonzero(reference.matrix().std(axis=0) > 0)  # the cells the distances see
    distances = RealismScorer(ScoreConfig(near_copy_linkage_percentile=0), reference.schema).fit(
        reference.matrix(), holdout.matrix())  # the distances alone; record linkage: tests/test_scoring_linkage.py
    for cells, copy in ((t, True), (t + 1, False)):  # edited in t cells: a copy; in t + 1 cells 50 SD apart: not
        moved = copies.copy()
        for row in range(10):
            moved[row, varying[(row + np.arange(cells)) % len(varying)]] += 50.0 * reference.matrix().std(axis=0).max()
        ratio = distances.score(moved)["copy_ratio"]
        assert ((ratio == 0) if copy else (ratio > 1)).all(), cells
    clean = real[(real.n_invalid == 0) & ~real.near_copy & (real.rule_violations == "") & (real.n_unusual == 0)]
    assert len(clean) >= 10
    assert (clean["s_sparsity"] == 10).mean() > 0.9 and (clean["privacy_cap"] == 10).all()


def test_mean_patient_and_all_zero_record_are_penalized(cohort, scorer):
    # Setup
    reference, _ = cohort
    mean_patient = reference.matrix().mean(axis=0, keepdims=True)
    # Run
    scores = scorer.score(np.vstack([mean_patient, np.zeros_like(mean_patient)]))
    # Assert
    assert (scores["realism_continuous"] <= 3).all()
    assert (scores["n_invalid"] > 0).all() and "gender" in scores["invalid_columns"][0]


def test_hardened_falls_with_strength_where_records_are_no_copies(cohort, scorer):
    # Setup / Run
    reference, holdout = cohort
    means = []
    for strength in (0.1, 0.2, 1.0):
        frame = generate("noisy_copy", reference, 60, strength, seed=3)
        means.append(scorer.score(frame[reference.schema.names].to_numpy(float))["realism_continuous"].mean())
    # Assert: realistic-but-flawed records spread over the scale
    assert means[0] > means[1] >= means[2] and means[0] - means[2] >= 3, means


def test_seed_definition_reproduces_the_original_scores_byte_for_byte(tmp_path):
    # Setup: expected_scores.csv was written by `ehrjudge score` before the hardened definition existed.
    out = tmp_path / "scores.csv"
    # Run
    result = CliRunner().invoke(app, ["score", "--reference", str(FIXTURE / "reference"), "--holdout",
                                      str(FIXTURE / "holdout"), "--synthetic", str(FIXTURE / "synthetic.csv"),
                                      "--out", str(out), "--definition", "seed"])
    # Assert
    assert result.exit_code == 0, result.output
    assert out.read_bytes() == (FIXTURE / "expected_scores.csv").read_bytes()


def test_hardened_and_seed_agree_on_ordering_valid_records(cohort, scorer):
    # Setup
    reference, holdout = cohort
    seed = RealismScorer(ScoreConfig(definition="seed"), reference.schema).fit(reference.matrix(), holdout.matrix())
    frames = [generate(g, reference, 40, s, seed=4) for g in ("gaussian_copula", "independent_marginals")
              for s in (0.0, 0.2, 0.5, 1.0)]
    records = pd.concat(frames)[reference.schema.names].to_numpy(float)
    # Run
    hardened, original = scorer.score(records), seed.score(records)
    # Assert: the two definitions order these ladders the same way overall
    assert spearmanr(hardened["realism_continuous"], original["realism_continuous"])[0] > 0.7


def test_probe_command_writes_the_table_and_scores_hacks_low(tmp_path):
    # Setup
    out = tmp_path / "probes"
    # Run
    result = CliRunner().invoke(app, ["probe", "--reference", str(FIXTURE / "reference"), "--holdout",
                                      str(FIXTURE / "holdout"), "--out", str(out), "--n", "20"])
    # Assert
    assert result.exit_code == 0, result.output
    table = pd.DataFrame(json.loads((out / "probes.json").read_text())["probes"]).set_index("probe")
    hacks = table[table.kind == "hack"]
    assert len(hacks) == 9 and (hacks["hardened_mean"] <= 3.5).all(), hacks["hardened_mean"]
    assert table.loc["edited_copy", "hardened_max"] <= 2, "a copy with one code added is still a copy"
    assert (hacks["seed_mean"] > hacks["hardened_mean"]).all()
    assert table.loc["holdout_real", "hardened_median"] >= 8
    assert table.loc["rule_violator", "hardened_max"] <= ScoreConfig().essential_cap
    assert (out / "probes.md").read_text().startswith("| probe |")
    assert set(pd.read_csv(out / "probe_records.csv").probe) == set(table.index)


def test_probe_command_names_a_too_small_holdout_and_writes_nothing(tmp_path):
    # Setup: a holdout of 3 patients (two halves need 4), and a judge folder that is never loaded
    holdout = Cohort.load(FIXTURE / "holdout")
    Cohort(holdout.vectors.iloc[:3].reset_index(drop=True), holdout.schema).save(tmp_path / "small")
    out = tmp_path / "probes"
    command = [sys.executable, "-c", "from ehrjudge.cli import main; main()", "probe", "--reference",
               str(FIXTURE / "reference"), "--holdout", str(tmp_path / "small"), "--judge", str(tmp_path / "no-judge"),
               "--out", str(out)]
    # Run
    completed = subprocess.run(command, capture_output=True, text=True)
    # Assert: exit 2 with the holdout's file named, before any judge is loaded, nothing written
    assert completed.returncode == 2, completed.stderr
    assert "at least 4" in completed.stderr and str(tmp_path / "small") in completed.stderr
    assert not out.exists()
