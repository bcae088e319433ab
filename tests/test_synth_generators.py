"""Synthetic generators: schema alignment, determinism, kinds, known answers and the monotone realism ladder."""

import numpy as np
import pandas as pd
import pytest

from ehrjudge.cohort.schema import validate_vectors
from ehrjudge.errors import InputError
from ehrjudge.scoring.realism import RealismScorer, ScoreConfig
from ehrjudge.synth.generators import GENERATORS, generate
from ehrjudge.synth.toy import toy_cohort

STRENGTHS = (0.0, 0.5, 1.0)


@pytest.fixture(scope="module")
def reference():
    return toy_cohort(300, seed=0)


@pytest.fixture(scope="module")
def holdout():
    return toy_cohort(80, seed=1)


@pytest.mark.parametrize("name", list(GENERATORS))
def test_columns_match_reference_schema(name, reference, holdout):
    # Run
    frame = generate(name, reference, 40, 0.5, seed=3, holdout=holdout)
    # Assert
    assert list(frame.columns) == ["record_id", "generator", "strength", *reference.schema.names]
    assert frame.record_id.is_unique and len(frame) == 40
    assert (frame.generator == name).all()
    validate_vectors(frame, reference.schema)  # raises on missing/extra/non-finite columns


@pytest.mark.parametrize("name", list(GENERATORS))
def test_same_seed_same_records_other_seed_other_records(name, reference, holdout):
    # Run
    first = generate(name, reference, 30, 0.35, seed=11, holdout=holdout)
    again = generate(name, reference, 30, 0.35, seed=11, holdout=holdout)
    other = generate(name, reference, 30, 0.35, seed=12, holdout=holdout)
    # Assert
    pd.testing.assert_frame_equal(first, again)
    names = reference.schema.names
    assert not np.array_equal(first[names].to_numpy(), other[names].to_numpy())


@pytest.mark.parametrize("name", list(GENERATORS))
def test_kinds_are_kept(name, reference, holdout):
    kinds = {f.name: f.kind for f in reference.schema.features}
    counts = [c for c, k in kinds.items() if k == "count"]
    binaries = [c for c, k in kinds.items() if k == "binary"]
    for strength in STRENGTHS:
        # Run
        frame = generate(name, reference, 50, strength, seed=5, holdout=holdout)
        # Assert
        values = frame[counts].to_numpy()
        assert (values >= 0).all() and (values == np.round(values)).all(), (name, strength)
        assert set(np.unique(frame[binaries].to_numpy())) <= {0.0, 1.0}, (name, strength)
        assert (frame["age"] >= 0).all()


def test_noisy_copy_at_zero_strength_copies_reference_rows(reference):
    # Run
    frame = generate("noisy_copy", reference, 50, 0.0, seed=2)
    # Assert
    reference_rows = {tuple(row) for row in reference.matrix()}
    assert all(tuple(row) in reference_rows for row in frame[reference.schema.names].to_numpy())


def test_holdout_real_returns_holdout_patients_and_needs_a_holdout(reference, holdout):
    # Run
    frame = generate("holdout_real", reference, 80, 0.9, seed=4, holdout=holdout)
    # Assert
    got = sorted(tuple(r) for r in frame[reference.schema.names].to_numpy())
    assert got == sorted(tuple(r) for r in holdout.matrix())  # n = holdout size: each patient once
    assert (frame.strength == 0.0).all()
    with pytest.raises(InputError, match="holdout"):
        generate("holdout_real", reference, 10, 0.0, seed=4)


def test_mode_collapse_at_full_strength_is_one_prototype(reference):
    discrete = [f.name for f in reference.schema.features if f.kind != "continuous"]
    # Run
    collapsed = generate("mode_collapse", reference, 60, 1.0, seed=1)
    varied = generate("mode_collapse", reference, 60, 0.0, seed=1)
    # Assert
    assert len(collapsed[discrete].drop_duplicates()) == 1
    assert len(varied[discrete].drop_duplicates()) > 40


def test_clinical_inconsistency_injects_perinatal_codes_into_adults(reference):
    # Setup: the toy cohort never codes P07 (perinatal) and every toy patient is an adult.
    assert (reference.vectors["dx_P07"] == 0).all() and (reference.vectors["age"] >= 18).all()
    # Run
    clean = generate("clinical_inconsistency", reference, 60, 0.0, seed=8)
    broken = generate("clinical_inconsistency", reference, 60, 1.0, seed=8)
    # Assert
    assert (clean["dx_P07"] == 0).all()
    assert (broken["dx_P07"] > 0).all()


def test_sparsity_distortion_moves_code_totals_both_ways(reference):
    codes = [f.name for f in reference.schema.features if f.code is not None]
    base_total = reference.vectors[codes].sum(axis=1).mean()
    # Run
    totals = generate("sparsity_distortion", reference, 200, 1.0, seed=9)[codes].sum(axis=1)
    # Assert: strength 1 thins half the records to no codes and inflates the rest far above the mean.
    assert (totals == 0).mean() > 0.35
    assert (totals > 5 * base_total).mean() > 0.35


def test_bad_arguments_raise_input_error(reference):
    with pytest.raises(InputError, match="unknown generator"):
        generate("gan", reference, 10, 0.0, seed=0)
    with pytest.raises(InputError, match="strength"):
        generate("noisy_copy", reference, 10, 1.5, seed=0)


@pytest.mark.parametrize("name", sorted(set(GENERATORS) - {"mode_collapse", "holdout_real"}))
def test_mean_realism_falls_with_strength(name, reference, holdout):
    # Setup: the project's realism scorer, fit on the reference and calibrated on held-out patients.
    scorer = RealismScorer(ScoreConfig(definition="seed")).fit(reference.matrix(), holdout.matrix())  # the ladder it was built on
    means = []
    for strength in (0.0, 0.35, 1.0):
        # Run
        frame = generate(name, reference, 150, strength, seed=21)
        means.append(scorer.score(frame[reference.schema.names].to_numpy()).realism_continuous.mean())
    # Assert
    assert means[0] > means[1] + 0.2 > means[2] + 0.4, (name, means)
