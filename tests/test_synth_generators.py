"""Synthetic generators: schema alignment, determinism, kinds, known answers and the monotone realism ladder."""

import numpy as np
import pandas as pd
import pytest

from ehrjudge.cohort.schema import validate_vectors
from ehrjudge.errors import InputError
from ehrjudge.scoring.realism import RealismScorer, ScoreConfig
from ehrjudge.synth.config import DEFAULT_POOL, FAMILIES
from ehrjudge.synth.generators import GENERATORS, generate
from ehrjudge.synth.toy import toy_cohort

STRENGTHS = (0.0, 0.5, 1.0)


@pytest.fixture(scope="module")
def reference():
    return toy_cohort(300, seed=0)


@pytest.fixture(scope="module")
def holdout():
    return toy_cohort(80, seed=1)


def test_config_names_the_generator_families_in_their_seed_order():
    # DatasetConfig checks names against synth.config.FAMILIES without importing the generators
    assert FAMILIES == tuple(GENERATORS)
    assert set(DEFAULT_POOL) <= set(FAMILIES)


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


@pytest.mark.parametrize("name", sorted(set(GENERATORS) - {"isolated_defects"}))  # it breaks domains on purpose
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


def _rows_of(matrix, columns):
    return {tuple(row) for row in matrix[:, columns]}


def test_patient_splice_joins_one_patients_demographics_to_anothers_tables(reference):
    # Setup
    demographics = [i for i, f in enumerate(reference.schema.features) if f.group == "demographics"]
    clinical = [i for i, f in enumerate(reference.schema.features) if f.group != "demographics"]
    matrix = reference.matrix()
    # Run
    near = generate("patient_splice", reference, 80, 0.0, seed=3)[reference.schema.names].to_numpy()
    far = generate("patient_splice", reference, 80, 1.0, seed=3)[reference.schema.names].to_numpy()
    # Assert: both halves are real patients' (at strength 0 the nearest donor may share all demographics, so a
    # record can equal the donor; at strength 1 none does)
    for records in (near, far):
        assert _rows_of(records, demographics) <= _rows_of(matrix, demographics)
        assert _rows_of(records, clinical) <= _rows_of(matrix, clinical)
    assert not {tuple(r) for r in far} & {tuple(r) for r in matrix}
    # strength 1 takes the tables of demographically unlike patients: age gaps far above strength 0's
    age = reference.schema.names.index("age")
    donor_age = {tuple(row[clinical]): row[age] for row in matrix}
    gap = [np.mean([abs(r[age] - donor_age[tuple(r[clinical])]) for r in records]) for records in (near, far)]
    assert gap[1] > 5 * gap[0] + 10, gap


def test_independent_tables_takes_every_table_from_a_real_patient(reference):
    # Setup
    groups = list(dict.fromkeys(f.group for f in reference.schema.features))
    columns = {g: [i for i, f in enumerate(reference.schema.features) if f.group == g] for g in groups}
    matrix = reference.matrix()
    # Run
    records = generate("independent_tables", reference, 400, 1.0, seed=4)[reference.schema.names].to_numpy()
    # Assert: each table block is some reference patient's block; across tables the records no longer share the
    # toy cohort's latent severity (admissions vs number of diagnoses: correlated in the reference, not here)
    for g in groups:
        assert _rows_of(records, columns[g]) <= _rows_of(matrix, columns[g]), g

    def admissions_vs_diagnoses(rows):
        return np.corrcoef(rows[:, columns["admissions"][0]], rows[:, columns["diagnoses"]].sum(axis=1))[0, 1]

    assert admissions_vs_diagnoses(matrix) > 0.3 and abs(admissions_vs_diagnoses(records)) < 0.15


def test_smote_copies_discrete_columns_and_interpolates_within_the_segment_at_zero(reference):
    # Setup
    kinds = np.array([f.kind for f in reference.schema.features])
    discrete, continuous = np.flatnonzero(kinds != "continuous"), np.flatnonzero(kinds == "continuous")
    matrix = reference.matrix()
    # Run
    records = generate("smote", reference, 60, 0.0, seed=6)[reference.schema.names].to_numpy()
    # Assert: every count/binary value is one a reference patient has in that column (no averaged counts), and
    # continuous values stay inside the reference's range (t in [0, 1])
    for j in discrete:
        assert set(records[:, j]) <= set(matrix[:, j]), reference.schema.names[j]
    low, high = matrix[:, continuous].min(axis=0), matrix[:, continuous].max(axis=0)
    assert ((records[:, continuous] >= low - 1e-9) & (records[:, continuous] <= high + 1e-9)).all()


def test_cooccurrence_shuffle_keeps_every_code_marginal_and_breaks_co_occurrence(reference):
    # Setup: n = the reference size, so at strength 0 the records are the reference itself, reordered
    codes = [f.name for f in reference.schema.features if f.code is not None]
    n = len(reference)
    # Run
    kept = generate("cooccurrence_shuffle", reference, n, 0.0, seed=9)
    shuffled = generate("cooccurrence_shuffle", reference, n, 1.0, seed=9)
    # Assert
    real = reference.vectors
    for column in codes:
        assert sorted(shuffled[column]) == sorted(real[column]) == sorted(kept[column])
    assert sorted(map(tuple, kept[reference.schema.names].to_numpy())) == sorted(map(tuple, reference.matrix()))
    together = [(frame["dx_I10"] > 0) & (frame["dx_I50"] > 0) for frame in (real, shuffled)]
    expected = (real["dx_I10"] > 0).mean() * (real["dx_I50"] > 0).mean()  # independence
    assert together[0].mean() > 1.5 * expected and abs(together[1].mean() - expected) < 0.5 * expected


# Families whose defect the seed realism score cannot see (correlation and consistency defects; docs/synth.md):
# their ladder is flat, and their own tests check what their strength does. memorized_copy's strength is distance
# from a real patient: the seed score barely moves, the hardened privacy cap rises with it (its own test).
FLAT_UNDER_THE_SCORE = {"mode_collapse", "holdout_real", "patient_splice", "independent_tables",
                        "cooccurrence_shuffle", "isolated_defects", "memorized_copy"}


@pytest.mark.parametrize("name", sorted(set(GENERATORS) - FLAT_UNDER_THE_SCORE))
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


def test_isolated_defects_change_a_real_patient_where_the_checks_see_it(reference, holdout):
    """Each record is a held-out patient with 1 + round(2 s) defects: a few cells changed, the rest real, and the
    hardened checks (validity, rubric, code sparsity) find something in nearly every record."""
    from ehrjudge.cohort.reference_stats import ReferenceStats
    from ehrjudge.scoring.hardened.checks import RecordChecks

    # Setup
    names = reference.schema.names
    real = holdout.matrix()
    checks = RecordChecks(ScoreConfig(), reference.schema, ReferenceStats.from_cohort(reference))
    for strength in (0.0, 1.0):
        # Run
        records = generate("isolated_defects", reference, 60, strength, seed=4, holdout=holdout)[names].to_numpy()
        # Assert: the nearest held-out patient differs in some cells, not in most
        changed = (records[:, None, :] != real[None, :, :]).sum(axis=2).min(axis=1)  # (n,)
        assert (changed >= 1).all() and np.median(changed) <= len(names) // 4, (strength, changed)
        found = checks.check(records)
        flagged = (found["n_invalid"] > 0) | (found["rule_violations"] != "") | (found["sparsity_z"] > 2.5)
        assert flagged.mean() >= 0.8, (strength, flagged.mean())
    with pytest.raises(InputError, match="holdout"):
        generate("isolated_defects", reference, 5, 0.5, seed=1)


def test_memorized_copy_is_a_reference_patient_at_a_graded_distance(reference, holdout):
    """Strength 0: exact copies; counts and binaries always the patient's own; the distance to the patient grows as
    MEMORIZED_REACH x strength near-copy distances, so the plain-distance privacy cap (near_copy_free_cells 0)
    climbs from 1 with strength. This fixture has 2 continuous columns, so every such record differs from its patient
    in at most 2 cells: the default hardened score (free_cells 3) calls each one a copy."""
    from ehrjudge.scoring.hardened.privacy import ClosestPatient
    from ehrjudge.synth.generators import MEMORIZED_REACH, NEAR_COPY_PERCENTILE, Reference

    # Setup
    names = reference.schema.names
    ref = Reference(reference.matrix(), reference.schema, holdout.matrix())
    closest = ClosestPatient(NEAR_COPY_PERCENTILE).fit(ref.matrix, ref.holdout)
    scorer = RealismScorer(ScoreConfig(near_copy_free_cells=0), reference.schema).fit(reference.matrix(),
                                                                                      holdout.matrix())
    default = RealismScorer(ScoreConfig(), reference.schema).fit(reference.matrix(), holdout.matrix())
    movable = int((~(ref.is_count | ref.is_binary)).sum())  # the cells memorized_copy may move
    assert movable <= ScoreConfig().near_copy_free_cells
    caps = []
    for strength in (0.0, 0.25, 1.0):
        # Run
        records = generate("memorized_copy", reference, 50, strength, seed=2, holdout=holdout)[names].to_numpy()
        # Assert: each record keeps a reference patient's counts and binaries exactly
        fixed = ref.is_count | ref.is_binary
        same = (records[:, None, fixed] == ref.matrix[None, :, fixed]).all(axis=2).any(axis=1)
        assert same.all(), strength
        dcr = closest.nearest(records)[0]
        moved = dcr > 0
        assert dcr.max() <= MEMORIZED_REACH * strength * closest.threshold_ * (1 + 1e-9) + 1e-12, strength
        if strength == 0.0:
            assert not moved.any()
        else:  # moved records sit at the graded distance from their own patient (or closer to another)
            assert moved.mean() >= 0.8, strength
        caps.append(scorer.score(records)["privacy_cap"].mean())
        assert (default.score(records)["privacy_cap"] == 1.0).all(), strength
    assert caps[0] == 1.0 and caps[0] < caps[1] < caps[2]
    with pytest.raises(InputError, match="holdout"):
        generate("memorized_copy", reference, 5, 0.5, seed=1)
