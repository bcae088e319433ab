"""Judge dataset: split hygiene (ids, near-duplicates, holdout), score balance and held-out families."""

import json

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import pairwise_distances

from ehrjudge.cohort.schema import Cohort
from ehrjudge.config import load_config
from ehrjudge.errors import ConfigError
from ehrjudge.scoring.realism import ScoreConfig
from ehrjudge.synth.dataset import SPLITS, DatasetConfig, assign_splits, build_dataset, near_duplicate_groups
from ehrjudge.synth.toy import toy_cohort

# The project default score (Mahalanobis + kNN privacy component, spread over the attainable 1..10).
DEFAULT_SCORE = ScoreConfig()


@pytest.fixture(scope="module")
def cohort_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("cohort")
    toy_cohort(300, seed=0).save(path)
    return path


@pytest.fixture(scope="module")
def dataset(cohort_dir, tmp_path_factory):
    config = DatasetConfig(size=600, seed=3, score=DEFAULT_SCORE)
    out = build_dataset(cohort_dir, tmp_path_factory.mktemp("ds") / "dataset", config)
    splits = {name: pd.read_parquet(out / f"{name}.parquet") for name in SPLITS}
    return out, config, splits, json.loads((out / "dataset.json").read_text())


def test_no_record_id_is_shared_between_splits(dataset):
    # Setup
    _, _, splits, _ = dataset
    # Run
    ids = pd.concat([frame.record_id for frame in splits.values()])
    # Assert
    assert ids.is_unique and len(ids) > 500


def test_no_near_duplicate_pair_crosses_splits(dataset):
    # Setup: the same standardized space and radius the builder used.
    out, _, splits, summary = dataset
    reference = Cohort.load(out / "reference")
    mean, std = reference.matrix().mean(axis=0), reference.matrix().std(axis=0)
    std[std == 0] = 1.0
    radius = summary["near_duplicate_radius"]
    assert radius > 0
    standardized = {k: (f[reference.schema.names].to_numpy() - mean) / std for k, f in splits.items()}
    for i, a in enumerate(SPLITS):
        for b in SPLITS[i + 1:]:
            # Run
            closest = pairwise_distances(standardized[a], standardized[b]).min()
            # Assert
            assert closest > radius, (a, b, closest)


def test_planted_near_copies_form_one_group_and_one_split():
    # Setup: 60 spread-out records; record 60 copies record 0 exactly, 61 is record 5 plus a tiny nudge.
    rng = np.random.default_rng(0)
    reference = rng.normal(size=(200, 8))
    records = rng.normal(size=(60, 8)) * 3
    records = np.vstack([records, records[0], records[5] + 1e-3])
    # Run
    groups, radius = near_duplicate_groups(records, reference, fraction=0.25)
    split = assign_splits(groups, {"train": 40, "val": 10, "test": 12}, rng)
    # Assert
    assert radius > 0
    assert groups[60] == groups[0] and groups[61] == groups[5] and groups[0] != groups[5]
    assert len(np.unique(groups)) == 60
    assert split[60] == split[0] and split[61] == split[5]
    assert {k: int((split == k).sum()) for k in ("train", "val", "test")} == {"train": 40, "val": 10, "test": 12}


def test_held_out_patients_never_in_reference(dataset, cohort_dir):
    # Setup
    out, _, splits, summary = dataset
    reference = Cohort.load(out / "reference")
    provenance = json.loads((out / "reference" / "raw" / "provenance.json").read_text())
    held_out = set(provenance["held_out_subject_ids"])
    # Run
    reference_rows = {tuple(r) for r in reference.matrix()}
    real = pd.concat(frame[frame.generator == "holdout_real"] for frame in splits.values())
    # Assert
    assert held_out and not held_out & set(reference.ids)
    assert len(held_out) + len(reference) == len(Cohort.load(cohort_dir))
    assert len(real) > 0
    assert not any(tuple(r) in reference_rows for r in real[reference.schema.names].to_numpy())


def test_every_score_holds_three_percent_of_train(dataset):
    # Setup
    _, config, splits, summary = dataset
    # Run
    shares = splits["train"].realism_score.value_counts(normalize=True).reindex(range(1, 11), fill_value=0)
    # Assert
    assert (shares >= config.min_bin_fraction).all(), shares.to_dict()
    assert summary["min_bin_fraction_met"]
    assert summary["splits"]["train"]["histogram"] == {str(k): int(v) for k, v in
                                                       splits["train"].realism_score.value_counts()
                                                       .reindex(range(1, 11), fill_value=0).items()}


def test_unseen_families_only_in_test_unseen(dataset):
    # Setup
    _, config, splits, _ = dataset
    unseen = set(config.unseen_generators)
    # Run
    seen_families = set(pd.concat([splits[k].generator for k in ("train", "val", "test")]))
    # Assert
    assert set(splits["test_unseen"].generator) == unseen
    assert not seen_families & unseen
    assert seen_families == set(config.generators) - unseen


def test_split_sizes_and_columns(dataset):
    # Setup
    out, config, splits, _ = dataset
    reference = Cohort.load(out / "reference")
    # Run
    sizes = {k: len(v) for k, v in splits.items()}
    # Assert
    for name, target in config.split_sizes().items():
        assert abs(sizes[name] - target) <= 0.1 * target + 5, (name, sizes[name], target)
    for frame in splits.values():
        assert list(frame.columns[:3]) == ["record_id", "generator", "strength"]
        assert frame.columns[3:3 + len(reference.schema.names)].tolist() == reference.schema.names
        assert {"realism_score", "realism_continuous", "near_copy"} <= set(frame.columns)


def test_same_seed_rebuilds_identical_train(dataset, cohort_dir, tmp_path):
    # Setup
    out, config, splits, _ = dataset
    # Run
    again = build_dataset(cohort_dir, tmp_path / "again", config)
    # Assert
    pd.testing.assert_frame_equal(pd.read_parquet(again / "train.parquet"), splits["train"])


def test_config_rejects_unknown_keys_and_foreign_unseen_families():
    with pytest.raises(ConfigError, match="unknown config key"):
        load_config(DatasetConfig, flags=["--sise", "10"])
    with pytest.raises(ConfigError, match="unseen_generators"):
        DatasetConfig(generators=["noisy_copy", "gaussian_copula"], unseen_generators=["interpolation"])
    assert load_config(DatasetConfig, flags=["--score.k", "3"]).score.k == 3
