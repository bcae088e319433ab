"""Leave-one-family-out (train/lofo.py), two folds on a tiny dataset with the tiny judge."""

import json

import numpy as np
import pandas as pd
import pytest

from ehrjudge.judge.tiny import save_tiny_judge
from ehrjudge.train.config import TrainConfig
from ehrjudge.train.data import load_frame
from ehrjudge.train.lofo import LofoConfig, make_fold, run_lofo, table_text
from ehrjudge.train.tiny import TINY_PROMPT, tiny_dataset

pytestmark = pytest.mark.usefixtures("one_torch_thread")
SPLITS = ("train", "val", "test", "test_unseen")


@pytest.fixture(scope="module")
def two_family_dataset(tmp_path_factory):
    """The tiny easy dataset, its records labelled by two families (alternating within each sex, so both families
    hold both scores) plus a few real patients."""
    root = tmp_path_factory.mktemp("lofo")
    dataset = tiny_dataset(root / "data", n_train=100, n_eval=24, seed=3)
    for split in SPLITS:
        frame = pd.read_parquet(dataset / f"{split}.parquet").sort_values("gender", kind="stable")
        frame["generator"] = np.where(np.arange(len(frame)) % 2 == 0, "fam_a", "fam_b")
        frame.loc[frame.index[:2], "generator"] = "holdout_real"
        frame.to_parquet(dataset / f"{split}.parquet")
    return root, dataset


def test_fold_holds_the_family_out_of_training_and_tests_on_all_of_it(two_family_dataset):
    # Setup
    _, dataset = two_family_dataset
    splits = {s: load_frame(dataset, s) for s in SPLITS}
    # Run
    fold = make_fold(splits, "fam_a")
    # Assert
    assert "fam_a" not in set(fold.train["generator"]) | set(fold.val["generator"])
    assert set(fold.train["generator"]) == {"fam_b", "holdout_real"}
    expected = {r for s in ("val", "test", "test_unseen")
                for r in splits[s].loc[splits[s].generator == "fam_a", "record_id"]}
    assert set(fold.test["record_id"]) == expected and (fold.test["generator"] == "fam_a").all()


def test_two_fold_protocol_never_trains_on_the_held_out_family(two_family_dataset):
    # Setup
    root, dataset = two_family_dataset
    model = save_tiny_judge(root / "tiny-judge", seed=0)
    judge = TrainConfig(model=str(model), max_steps=2, batch_size=4, eval_every=2, checkpoint_every=100,
                        train_layers=1, lora_r=4, learning_rate=1e-2, warmup_steps=1, val_records=0, train_records=0,
                        tracking="none", max_wall_minutes=0, kl_coef=0.05, prompt=TINY_PROMPT)
    config = LofoConfig(dataset=str(dataset), output_dir=str(root / "run"), judge=judge, judge_train_records=16,
                        judge_val_records=8, n_bootstrap=100)
    # Run
    result = run_lofo(config)
    # Assert: one fold per family (real patients are never a fold), each judge trained without its family
    assert [fold["family"] for fold in result["folds"]] == ["fam_a", "fam_b"]
    for fold in result["folds"]:
        family, fold_dir = fold["family"], root / "run" / "folds" / fold["family"]
        trained_on = pd.concat([pd.read_parquet(fold_dir / "dataset" / f"{s}.parquet") for s in ("train", "val")])
        assert family not in set(trained_on["generator"]) and len(trained_on) > 0
        summary = json.loads((fold_dir / "run" / "summary.json").read_text())
        assert summary["train_records"] + summary["val_records"] == len(trained_on) and summary["steps"] == 2
        assert fold["judge_training"]["steps"] == 2
        for scorer in ("formula", "regressor", "judge"):
            assert set(fold["scorers"][scorer]) >= {"spearman", "spearman_ci", "pearson", "pearson_ci"}
    # the regressor learns the tiny task (score = 9 for men, 2 for women) from the other family alone
    assert all(fold["scorers"]["regressor"]["spearman"] == pytest.approx(1.0) for fold in result["folds"])
    mean = result["mean"]["regressor"]
    assert mean["spearman"] == pytest.approx(1.0) and mean["n_folds"] == 2 and mean["spearman_ci"][0] <= 1.0
    assert json.loads((root / "run" / "lofo.json").read_text())["folds"][0]["family"] == "fam_a"
    text = table_text(result)
    assert "mean over folds" in text and "2 optimizer steps of 4 records per fold" in text


def test_facts_scorer_learns_from_the_other_family_what_the_text_shows(two_family_dataset):
    """`facts` (the regressor on the findings text's numbers, no judge training) runs per fold like the regressor;
    sex is one of those numbers, so the tiny task (9 for men, 2 for women) is learned from the other family."""
    # Setup
    root, dataset = two_family_dataset
    config = LofoConfig(dataset=str(dataset), output_dir=str(root / "facts"), scorers=["regressor", "facts"],
                        n_bootstrap=50)
    # Run
    result = run_lofo(config)
    # Assert
    assert [fold["family"] for fold in result["folds"]] == ["fam_a", "fam_b"]
    assert all(fold["scorers"]["facts"]["spearman"] == pytest.approx(1.0) for fold in result["folds"])
    assert "regressor, facts only (no judge training)" in table_text(result)
