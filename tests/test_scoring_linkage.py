"""Record linkage (scoring/hardened/linkage.py): bin edges and weights by hand, copies with many edits linked and
capped, held-out patients linked no more often than the percentile says, and linkage off gives the distances alone."""

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from ehrjudge.cohort.schema import Cohort
from ehrjudge.errors import ConfigError, InputError
from ehrjudge.scoring.hardened.linkage import BINS, EPSILON, HALVING_BITS, RecordLinkage, column_edges
from ehrjudge.scoring.hardened.privacy import ClosestPatient
from ehrjudge.scoring.realism import RealismScorer, ScoreConfig

FIXTURE = Path(__file__).parent / "fixtures" / "seed_score"


@pytest.fixture(scope="module")
def cohort():
    return Cohort.load(FIXTURE / "reference"), Cohort.load(FIXTURE / "holdout")


def codes_added(reference: Cohort, n: int, k: int, seed: int) -> np.ndarray:
    """The first n reference patients, each with k codes it lacks (and some patient has) added once."""
    matrix = reference.matrix()
    codes = np.array([f.kind == "count" and f.code is not None for f in reference.schema.features])
    rng = np.random.default_rng(seed)
    edited = matrix[:n].copy()
    for row in edited:
        row[rng.choice(np.flatnonzero(codes & (row == 0) & (matrix.max(axis=0) > 0)), k, replace=False)] += 1.0
    return edited


def test_column_edges_sit_halfway_between_values_and_keep_a_minimum_width():
    # few distinct values: one bin each, edges halfway
    assert np.allclose(column_edges(np.array([0, 0, 0, 1, 1, 3.0])), [0.5, 2.0])
    # the edge halfway between 1.001 and 1.002 lies 0.001 above the one before, under 0.02 SD (SD 4.3): dropped
    values = np.array([0.0, 1.0, 1.001, 1.002, 10.0, 10.0])
    assert np.allclose(column_edges(values), [0.5, 1.0005, 5.501])
    # many distinct values: at most BINS bins
    assert len(column_edges(np.random.default_rng(0).normal(size=1000))) <= BINS - 1


def test_weight_matches_the_formula_by_hand():
    """Two columns, four reference patients: W(x, r) summed cell by cell from the module docstring's equation."""
    reference = np.array([[0, 1], [0, 2], [1, 1], [0, 1.0]])
    calibration = np.array([[1, 2.0]])
    linkage = RecordLinkage(percentile=50.0).fit(reference, calibration)
    records = np.array([[1, 1.0], [0, 2.0], [5, 7.0]])
    # u (add-one smoothed over each column's bins): column 0 bins {0}: 3/4 -> 4/6, {1}: 1/4 -> 2/6;
    # column 1 bins {1}: 3/4 -> 4/6, {2}: 1/4 -> 2/6
    m = 1 - EPSILON

    def cell(agree, u):
        return np.log2(m / u) if agree else min(0.0, np.log2(EPSILON / (1 - u)))

    u = {0: {0: 4 / 6, 1: 2 / 6}, 1: {1: 4 / 6, 2: 2 / 6}}
    bins = [lambda v: 0 if v < 0.5 else 1, lambda v: 1 if v < 1.5 else 2]
    expected = np.array([[sum(cell(bins[j](x[j]) == bins[j](r[j]), u[j][bins[j](r[j])]) for j in range(2))
                          for r in reference] for x in records])
    weights, index = linkage.weight(records)
    assert np.allclose(weights, expected.max(axis=1))
    assert np.allclose(expected[np.arange(3), index], expected.max(axis=1))
    assert linkage.threshold_ == pytest.approx(np.percentile(linkage.weight(calibration)[0], 50.0))
    excess = weights - linkage.threshold_
    assert np.allclose(linkage.ratio(records), np.where(excess > 0, 2.0 ** (-excess / HALVING_BITS), np.inf))


def test_copies_with_many_codes_added_are_linked_and_capped(cohort):
    """Copies with 8 codes added escape every distance (DCR_3 skips only three cells) but not linkage."""
    reference, holdout = cohort
    matrix, edited = reference.matrix(), codes_added(reference, 40, 8, seed=0)
    linked = RealismScorer(ScoreConfig(), reference.schema).fit(matrix, holdout.matrix())
    off = RealismScorer(ScoreConfig(near_copy_linkage_percentile=0.0), reference.schema).fit(matrix, holdout.matrix())
    with_linkage, distances_only = linked.score(edited), off.score(edited)
    assert not distances_only["near_copy"].any() and not distances_only["linked"].any()
    assert with_linkage["linked"].mean() >= 0.8
    chosen = with_linkage[with_linkage["linked"]]
    assert chosen["near_copy"].all() and (chosen["privacy_cap"] < 10).all()
    assert (chosen["realism_continuous"] <= chosen["privacy_cap"]).all()
    assert (with_linkage["realism_continuous"] <= distances_only["realism_continuous"]).all()
    assert (with_linkage["realism_continuous"] < distances_only["realism_continuous"]).mean() >= 0.6
    assert (with_linkage["realism_continuous"] <= 3).mean() >= 0.6


def test_held_out_patients_link_no_more_often_than_the_percentile(cohort):
    reference, holdout = cohort
    closest = ClosestPatient(5.0, free_cells=3, linkage_percentile=10.0).fit(reference.matrix(), holdout.matrix())
    linked = np.isfinite(closest.copy_ratio(holdout.matrix())["linked"])
    assert linked.mean() <= 0.10 + 1e-9 and linked.mean() > 0


def test_linkage_off_is_the_distances_alone(cohort):
    """linkage_percentile 0: the ratio is the distance ratio of the earlier definition exactly."""
    reference, holdout = cohort
    records = np.vstack([reference.matrix()[:20], holdout.matrix()])
    off = ClosestPatient(5.0, free_cells=3).fit(reference.matrix(), holdout.matrix()).copy_ratio(records)
    on = ClosestPatient(5.0, free_cells=3, linkage_percentile=1.0).fit(reference.matrix(), holdout.matrix())
    on = on.copy_ratio(records)
    assert np.isinf(off["linked"]).all()
    assert np.array_equal(on["ratio"], np.minimum(off["ratio"], on["linked"]))


def test_bad_linkage_settings_are_refused():
    with pytest.raises(ConfigError, match="near_copy_linkage_percentile"):
        ScoreConfig(near_copy_linkage_percentile=100.0)
    with pytest.raises(InputError, match="percentile"):
        RecordLinkage(percentile=0.0)


def test_findings_line_names_a_linked_copy(cohort):
    from ehrjudge.judge.findings import finding_lines
    from ehrjudge.judge.reference import cohort_reference

    reference, holdout = cohort
    stats = cohort_reference(reference, holdout, ScoreConfig())
    rows = codes_added(reference, 20, 8, seed=1)
    linked = np.isfinite(stats.patients.copy_ratio(rows)["linked"])
    assert linked.any()
    frame = pd.DataFrame(rows, columns=reference.schema.names)
    lines = finding_lines(frame, reference.schema, stats, closest=True)
    assert all(("record linkage" in line[-1]) == bool(flag) for line, flag in zip(lines, linked))


def test_a_saved_score_without_linkage_reads_as_labelled(tmp_path):
    """A dataset saved before a setting existed was labelled without it: reading its score section gives the earlier
    value, not today's default; a section that names it keeps it."""
    import dataclasses

    import yaml

    from ehrjudge.scoring.config import dataset_score_config, saved_score_config

    whole = dataclasses.asdict(ScoreConfig())
    older = {key: value for key, value in whole.items()
             if key not in ("near_copy_linkage_percentile", "near_copy_free_cells")}
    (tmp_path / "reference").mkdir()
    (tmp_path / "config.yaml").write_text(yaml.safe_dump({"score": older}))
    read = dataset_score_config(tmp_path / "reference")
    assert read.near_copy_linkage_percentile == 0.0 and read.near_copy_free_cells == 0
    assert saved_score_config(whole) == ScoreConfig()
