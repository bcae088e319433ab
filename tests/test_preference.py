"""Preference methods beside the RLVR judge: Bradley-Terry reward model, DPO, pairwise judge, `ehrjudge compare`.

Losses against hand-worked values; tiny-model runs where the loss falls and every trainable parameter moves."""

import math

import numpy as np
import pytest
import torch

from ehrjudge.judge.tiny import save_tiny_judge
from ehrjudge.train.config import TrainConfig
from ehrjudge.train.tiny import TINY_PROMPT, tiny_dataset

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """(dataset dir, base model dir) of the tiny easy task."""
    root = tmp_path_factory.mktemp("preference")
    return tiny_dataset(root / "data", n_train=32, n_eval=16, seed=0), save_tiny_judge(root / "tiny-llama", seed=0)


def _base(tiny, **overrides) -> TrainConfig:
    dataset, model = tiny
    values = dict(model=str(model), dataset=str(dataset), tracking="none", device="cpu", lora_r=8, train_layers=1,
                  learning_rate=1e-2, batch_size=8, epochs=100, max_steps=12, eval_every=6, checkpoint_every=100,
                  warmup_steps=1, val_records=0, train_records=0, kl_coef=0.0, prompt=TINY_PROMPT, seed=3,
                  log_every=1)
    values.update(overrides)
    return TrainConfig(**values)


def _watch_parameters(monkeypatch):
    """Wrap train.pairs.optimize to snapshot the trainable parameters before and after training."""
    from ehrjudge.train import pairs

    seen = {}
    original = pairs.optimize

    def optimize_and_snapshot(step_loss, module, *args, **kwargs):
        seen["before"] = {n: p.detach().clone() for n, p in module.named_parameters() if p.requires_grad}
        result = original(step_loss, module, *args, **kwargs)
        seen["after"] = {n: p.detach().clone() for n, p in module.named_parameters() if p.requires_grad}
        return result

    monkeypatch.setattr(pairs, "optimize", optimize_and_snapshot)
    return seen


def _all_moved(seen) -> list[str]:
    return [name for name, before in seen["before"].items() if torch.equal(before, seen["after"][name])]


# Bradley-Terry ------------------------------------------------------------------------------------------------------
def test_bradley_terry_loss_hand_worked():
    from ehrjudge.train.bradley_terry import bradley_terry_loss

    # Setup: margins 2 and 0: -log sigma(2) = log(1 + e^-2), -log sigma(0) = log 2
    chosen, rejected = torch.tensor([2.0, 0.5]), torch.tensor([0.0, 0.5])
    # Run
    loss = bradley_terry_loss(chosen, rejected)
    # Assert
    assert loss.item() == pytest.approx((math.log(1 + math.exp(-2)) + math.log(2)) / 2, abs=1e-6)
    assert (math.log(1 + math.exp(-2)) + math.log(2)) / 2 == pytest.approx(0.4100378, abs=1e-6)


def test_bradley_terry_trains_saves_and_loads(tiny, tmp_path, monkeypatch):
    from ehrjudge.cohort.schema import Schema
    from ehrjudge.cohort.reference_stats import ReferenceStats
    from ehrjudge.io import read_table
    from ehrjudge.train.bradley_terry import load_reward_model, train_bradley_terry
    from ehrjudge.train.preference_config import BradleyTerryConfig

    # Setup
    seen = _watch_parameters(monkeypatch)
    config = BradleyTerryConfig(output_dir=str(tmp_path / "bt"), base=_base(tiny), margin=2)
    # Run
    summary = train_bradley_terry(config)
    saved = load_reward_model(tmp_path / "bt")
    dataset = tiny[0]
    records = read_table(dataset / "test.parquet")
    raw, calibrated = saved.score(records, Schema.load(dataset / "reference" / "schema.json"),
                                  ReferenceStats.from_dir(dataset / "reference"))
    # Assert: the loss fell, every trainable parameter (LoRA and head) moved, the model ranks the easy task
    losses = [line["train/loss"] for line in map(__import__("json").loads,
                                                 (tmp_path / "bt" / "metrics.jsonl").read_text().splitlines())
              if "train/loss" in line]
    assert np.mean(losses[-3:]) < 0.5 * np.mean(losses[:3])
    assert summary["pairs"] > 0 and summary["steps"] == 12
    assert seen["before"] and any("head" in n for n in seen["before"]) and any("lora_" in n for n in seen["before"])
    assert _all_moved(seen) == []
    assert summary["val_spearman"] > 0.5
    # the folder round-trips: calibrated scores on 1..10, ordered as the raw rewards, male records (9) above female (2)
    assert saved.calibration is not None and np.all((calibrated >= 1) & (calibrated <= 10))
    truth = records["realism_score"].to_numpy()
    assert raw[truth == 9].mean() > raw[truth == 2].mean()


def test_last_hidden_cached_equals_plain():
    from ehrjudge.judge.tiny import tiny_judge
    from ehrjudge.train.policy import LabelPolicy

    # Setup: the same prompts through the whole model and through the cached lower layer + shared prefix
    model, tokenizer = tiny_judge(seed=1)
    prompts = [f"<|im_start|>user\nRecord {i}: {'x ' * i}<|im_end|>\n<|im_start|>assistant\n" for i in range(1, 5)]
    plain = LabelPolicy(model, tokenizer, prompts, train_layers=0, cache_lower_layers=False)
    cached = LabelPolicy(model, tokenizer, prompts, train_layers=1, cache_lower_layers=True)
    # Run
    with torch.no_grad():
        expected, got = plain.last_hidden([0, 1, 2, 3]), cached.last_hidden([0, 1, 2, 3])
    # Assert
    assert cached.prefix is not None and got.shape == (4, model.config.hidden_size)
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-4)


# DPO ----------------------------------------------------------------------------------------------------------------
def test_dpo_loss_hand_worked():
    from ehrjudge.train.dpo import dpo_loss

    # Setup: record 1: policy log-ratios chosen +0.5, rejected -1.5, so logit 2; record 2: policy = reference, logit 0
    chosen, rejected = torch.tensor([-1.0, -2.0]), torch.tensor([-3.0, -1.0])
    ref_chosen, ref_rejected = torch.tensor([-1.5, -2.0]), torch.tensor([-1.5, -1.0])
    # Run
    loss, stats = dpo_loss(chosen, rejected, ref_chosen, ref_rejected, beta=0.5)
    # Assert: beta * logit = 1 and 0: (-log sigma(1) - log sigma(0)) / 2 = (log(1 + e^-1) + log 2) / 2
    assert loss.item() == pytest.approx((math.log(1 + math.exp(-1)) + math.log(2)) / 2, abs=1e-6)
    assert loss.item() == pytest.approx(0.5032045, abs=1e-6)
    assert stats["reward/margin"] == pytest.approx(0.5) and stats["reward/accuracy"] == pytest.approx(0.5)


def test_dpo_renormalization_cancels():
    from ehrjudge.train.dpo import dpo_loss

    # Setup: log-probs shifted by a per-record constant (another normalizer) give the same loss
    logp, ref = torch.log_softmax(torch.randn(3, 10, generator=torch.Generator().manual_seed(0)), -1), \
        torch.log_softmax(torch.randn(3, 10, generator=torch.Generator().manual_seed(1)), -1)
    shift, rows = torch.tensor([0.3, -2.0, 5.0]), torch.arange(3)
    c, r = torch.tensor([1, 4, 9]), torch.tensor([6, 0, 2])
    # Run
    plain, _ = dpo_loss(logp[rows, c], logp[rows, r], ref[rows, c], ref[rows, r], 0.1)
    shifted, _ = dpo_loss(logp[rows, c] + shift, logp[rows, r] + shift, ref[rows, c], ref[rows, r], 0.1)
    # Assert
    assert shifted.item() == pytest.approx(plain.item(), abs=1e-6)


def test_dpo_rejected_labels_respect_the_margin():
    from ehrjudge.train.dpo import DPOMethod
    from ehrjudge.train.preference_config import DPOConfig
    from ehrjudge.train.rewards import reward_table

    # Setup
    scores = torch.tensor([1, 5, 10, 7] * 50)
    method = DPOMethod(DPOConfig(margin=3))
    # Run
    state = method.prepare(None, reward_table(scores, "quadratic"), None, torch.Generator().manual_seed(0))
    # Assert: chosen is the score, rejected at least 3 labels away, and every such label is drawn
    assert torch.equal(state["chosen"] + 1, scores)
    assert ((state["rejected"] - state["chosen"]).abs() >= 3).all()
    assert set((state["rejected"][scores == 5] + 1).tolist()) == {1, 2, 8, 9, 10}


def test_dpo_run_lowers_the_loss_and_moves_every_parameter(tiny, tmp_path, monkeypatch):
    import json

    from ehrjudge.train import loop
    from ehrjudge.train.dpo import train_dpo
    from ehrjudge.train.preference_config import DPOConfig

    # Setup: snapshot the trainable parameters right after the adapter is attached, keep the model
    seen = {}
    original = loop.attach_trainable

    def attach_and_snapshot(base, config):
        wrapped = original(base, config)
        seen["model"] = wrapped
        seen["before"] = {n: p.detach().clone() for n, p in wrapped.named_parameters() if p.requires_grad}
        return wrapped

    monkeypatch.setattr(loop, "attach_trainable", attach_and_snapshot)
    config = DPOConfig(output_dir=str(tmp_path / "dpo"), base=_base(tiny, eval_every=4, checkpoint_every=4), beta=0.5)
    # Run
    summary = train_dpo(config)
    # Assert: DPO starts at log 2 (policy = reference) and falls; every LoRA parameter moved; judge folders written
    lines = [json.loads(line) for line in (tmp_path / "dpo" / "metrics.jsonl").read_text().splitlines()]
    losses = [line["train/loss"] for line in lines if "train/loss" in line]
    assert losses[0] == pytest.approx(math.log(2), abs=1e-4)
    assert np.mean(losses[-3:]) < 0.8 * losses[0]
    after = dict(seen["model"].named_parameters())
    assert seen["before"] and all(not torch.equal(value, after[name]) for name, value in seen["before"].items())
    assert summary["method"] == "dpo" and summary["steps"] == 12
    assert (tmp_path / "dpo" / "final" / "ehrjudge.json").exists() and (tmp_path / "dpo" / "dpo.yaml").exists()
    assert json.loads((tmp_path / "dpo" / "final" / "ehrjudge.json").read_text())["training"]["method"] == "dpo"


# Pairwise judge -----------------------------------------------------------------------------------------------------
def test_pairwise_loss_hand_worked():
    from ehrjudge.train.pairwise import pairwise_loss

    # Setup: pair 1: p(A) = 0.8 given, p(A) = 0.3 swapped, A right first (so B right swapped); pair 2: p(A) = 0.5
    given = torch.log(torch.tensor([[0.8, 0.2], [0.5, 0.5]]))
    swapped = torch.log(torch.tensor([[0.3, 0.7], [0.5, 0.5]]))
    right = torch.tensor([0, 1])
    # Run
    plain, _ = pairwise_loss(given, right)
    consistent, _ = pairwise_loss(given, right, swapped)
    # Assert: -mean p(right) = -(0.8 + 0.5) / 2; -mean p_given * p_swapped = -(0.8 * 0.7 + 0.5 * 0.5) / 2
    assert plain.item() == pytest.approx(-0.65, abs=1e-6)
    assert consistent.item() == pytest.approx(-0.405, abs=1e-6)



def test_pairwise_agreement_term_hand_worked():
    from ehrjudge.errors import ConfigError
    from ehrjudge.train.preference_config import PairwiseConfig
    from ehrjudge.train.pairwise import pairwise_loss

    # Setup: the pairs above; pair 1 agrees (the better record chosen in both orders) with P = 0.8*0.7 + 0.2*0.3,
    # pair 2 with P = 0.5*0.5 + 0.5*0.5; a judge always answering "A" never agrees
    given = torch.log(torch.tensor([[0.8, 0.2], [0.5, 0.5]]))
    swapped = torch.log(torch.tensor([[0.3, 0.7], [0.5, 0.5]]))
    right = torch.tensor([0, 1])
    always_a = torch.log(torch.tensor([[1.0, 1e-12], [1.0, 1e-12]]))
    # Run
    loss, stats = pairwise_loss(given, right, swapped, agreement_weight=1.0)
    biased, biased_stats = pairwise_loss(always_a, right, always_a, agreement_weight=1.0)
    # Assert: -(0.405 + 1.0 * mean(0.62, 0.5)); the position-biased judge earns nothing from either term
    assert loss.item() == pytest.approx(-(0.405 + 0.56), abs=1e-6)
    assert stats["reward/agreement"] == pytest.approx(0.56, abs=1e-6)
    assert biased.item() == pytest.approx(0.0, abs=1e-6) and biased_stats["reward/agreement"] == pytest.approx(0.0)
    with pytest.raises(ConfigError, match="agreement_weight"):
        PairwiseConfig(agreement_weight=-0.5)


def test_swap_metrics_known_answers():
    from ehrjudge.judge.pairwise import swap_metrics

    # Setup: a judge that always answers "A" (position bias) and one that always picks the better record
    better = np.array([True, False, True, False])
    # Run
    biased = swap_metrics(np.full(4, 0.9), np.full(4, 0.9), better)
    perfect = swap_metrics(np.where(better, 0.9, 0.1), np.where(better, 0.1, 0.9), better)
    # Assert
    assert biased == {"accuracy": 0.5, "consistent_accuracy": 0.0, "conflict_rate": 1.0, "balanced_accuracy": 0.5,
                      "n_pairs": 4}
    assert perfect == {"accuracy": 1.0, "consistent_accuracy": 1.0, "conflict_rate": 0.0, "balanced_accuracy": 1.0,
                       "n_pairs": 4}


def test_wilson_interval_known_answers():
    from ehrjudge.judge.pairwise import wilson_interval

    z2 = 1.959964 ** 2
    # no conflict in 64 pairs: [0, z^2 / (n + z^2)], not the bootstrap's [0, 0]
    assert wilson_interval(0, 64) == pytest.approx([0.0, z2 / (64 + z2)], abs=1e-12)
    # every pair: the mirror image
    assert wilson_interval(64, 64) == pytest.approx([64 / (64 + z2), 1.0], abs=1e-12)
    # 2 of 64 by hand: centre (p + z^2/2n) / (1 + z^2/n), half z sqrt(p(1-p)/n + z^2/4n^2) / (1 + z^2/n)
    p, n = 2 / 64, 64
    centre, half = (p + z2 / (2 * n)) / (1 + z2 / n), np.sqrt(z2 * (p * (1 - p) / n + z2 / (4 * n * n))) / (1 + z2 / n)
    assert wilson_interval(2, 64) == pytest.approx([centre - half, centre + half], abs=1e-12)
    assert wilson_interval(0, 0) is None


def test_balanced_verdict_recovers_a_position_biased_judge():
    from ehrjudge.judge.pairwise import balanced_right, swap_metrics

    # Setup: "A" always wins, but by more when A is the better record (0.9) than when it is the worse one (0.7)
    better = np.array([True, False, True, False])
    p_forward, p_swapped = np.where(better, 0.9, 0.7), np.where(better, 0.7, 0.9)
    # Run
    metrics = swap_metrics(p_forward, p_swapped, better)
    # Assert: every plain verdict flips with the order; averaged over the orders, p(first better) is
    # (0.9 + 0.3) / 2 = 0.6 when it is better and (0.7 + 0.1) / 2 = 0.4 when it is not: all right
    assert metrics["conflict_rate"] == 1.0 and metrics["accuracy"] == 0.5
    assert metrics["balanced_accuracy"] == 1.0 and balanced_right(p_forward, p_swapped, better).all()
    # a tie (p_bal = 0.5) names the second record
    assert balanced_right(np.array([0.5]), np.array([0.5]), np.array([False])).all()


def test_swap_on_tiny_model_flips_the_order_and_rates_conflicts():
    from ehrjudge.judge.pairwise import judge_pairs, oriented_pairs, pair_prompts, pairwise_prompt, swap_metrics
    from ehrjudge.judge.prompt import PAIRWISE_INSTRUCTION, PAIRWISE_SUFFIX
    from ehrjudge.judge.tiny import tiny_judge

    # Setup
    model, tokenizer = tiny_judge(seed=2)
    texts = [f"Demographics: {'male' if i % 2 else 'female'}, age {30 + i}" for i in range(8)]
    pairs, first_better = oriented_pairs(np.array([[1, 0], [3, 2], [5, 4], [7, 6], [1, 2], [3, 4]]), seed=0)
    prompt = pairwise_prompt(TINY_PROMPT, PAIRWISE_INSTRUCTION, PAIRWISE_SUFFIX)
    # Run
    forward = pair_prompts(texts, pairs, tokenizer, prompt)
    swapped = pair_prompts(texts, pairs[:, ::-1], tokenizer, prompt)
    p_forward, p_swapped = judge_pairs(model, tokenizer, texts, pairs, prompt, batch_size=4)
    metrics = swap_metrics(p_forward, p_swapped, first_better)
    # Assert: the swapped prompt shows the second record as A; probabilities of "A" are proper; rates in [0, 1]
    a, b = pairs[0]
    assert f"Record A:\n{texts[a]}\n\nRecord B:\n{texts[b]}" in forward[0]
    assert f"Record A:\n{texts[b]}\n\nRecord B:\n{texts[a]}" in swapped[0]
    assert first_better.any() and not first_better.all()
    assert np.all((p_forward > 0) & (p_forward < 1)) and not np.allclose(p_forward, p_swapped)
    assert 0.0 <= metrics["conflict_rate"] <= 1.0 and 0.0 <= metrics["accuracy"] <= 1.0
    assert metrics["n_pairs"] == 6


@pytest.mark.parametrize("swap_consistency", [False, True])
def test_pairwise_run_lowers_the_loss_and_moves_every_parameter(tiny, tmp_path, monkeypatch, swap_consistency):
    import json

    from ehrjudge.train.pairwise import load_pairwise_judge, train_pairwise
    from ehrjudge.train.preference_config import PairwiseConfig

    # Setup
    seen = _watch_parameters(monkeypatch)
    config = PairwiseConfig(output_dir=str(tmp_path / "pairwise"), base=_base(tiny, max_steps=10, eval_every=5),
                            swap_consistency=swap_consistency, eval_pairs=16, instruction="", suffix="")
    # Run
    summary = train_pairwise(config)
    model, tokenizer, prompt = load_pairwise_judge(tmp_path / "pairwise")
    # Assert: the loss (-expected reward) fell, every LoRA parameter moved, conflict rates before and after in [0, 1]
    losses = [line["train/loss"] for line in map(json.loads, (tmp_path / "pairwise" / "metrics.jsonl")
                                                 .read_text().splitlines()) if "train/loss" in line]
    assert np.mean(losses[-3:]) < np.mean(losses[:3])
    assert _all_moved(seen) == [] and all("lora_" in name for name in seen["before"])
    for key in ("initial_validation", "final_validation"):
        assert 0.0 <= summary[key]["conflict_rate"] <= 1.0 and summary[key]["n_pairs"] == 16
    assert summary["swap_consistency"] is swap_consistency and summary["train_pairs"] == 80
    assert prompt.instruction == "" and (tmp_path / "pairwise" / "final" / "adapter_config.json").exists()


# ehrjudge compare ---------------------------------------------------------------------------------------------------
def test_compare_cli_end_to_end(tiny, tmp_path, tiny_trained_judge):
    import json

    import yaml
    from typer.testing import CliRunner

    from ehrjudge.cli import app

    # Setup: the RLVR judge trained by conftest (on another tiny dataset of the same task), the three preference
    # methods trained by the command with a 4-step budget each, all scored on the 16-record splits
    root = tiny_trained_judge
    base = {"model": str(root / "cache" / "models" / "tiny-llama"), "tracking": "none", "lora_r": 4,
            "train_layers": 1, "learning_rate": 1e-2, "batch_size": 4, "max_steps": 4, "eval_every": 4,
            "checkpoint_every": 100, "warmup_steps": 1, "train_records": 0, "val_records": 0,
            "prompt": {"system_prompt": "Rate.", "instruction": "", "suffix": ""}}
    settings = {"dataset": str(tiny[0]), "judge": str(root / "run"),
                "train": ["bradley_terry", "dpo", "pairwise", "pairwise_consistent"], "bradley_terry": {"base": base},
                "dpo": {"base": base}, "pairwise": {"base": base, "eval_pairs": 8}, "eval_pairs": 16,
                "n_bootstrap": 50}
    config = tmp_path / "compare.yaml"
    config.write_text(yaml.safe_dump(settings))
    # Run
    result = CliRunner().invoke(app, ["compare", "--config", str(config), "--out", str(tmp_path / "compare"),
                                      "--pairwise.margin", "3"])
    # Assert: one row per method and split, intervals where they apply, files written
    assert result.exit_code == 0, result.output
    saved = json.loads((tmp_path / "compare" / "compare.json").read_text())
    methods = {"RLVR judge", "Bradley-Terry", "DPO judge", "pairwise judge", "pairwise judge (swap-consistent)",
               "pairwise judge+balanced", "pairwise judge (swap-consistent)+balanced", "formula", "regressor"}
    assert {(row["method"], row["split"]) for row in saved["rows"]} == {(m, s) for m in methods
                                                                        for s in ("test", "test_unseen")}
    assert len({(row["split"], row["n_pairs"]) for row in saved["rows"]}) == 2  # the same pairs for every method
    for row in saved["rows"]:
        assert 0.0 <= row["pair_accuracy"] <= 1.0 and 0 < row["n_pairs"] <= 16 and row["records_per_second"] > 0
        low, high = row["pair_accuracy_ci"]
        assert low <= row["pair_accuracy"] <= high
        if row["method"].startswith("pairwise judge"):
            assert 0.0 <= row["conflict_rate"] <= 1.0 and row["spearman"] is None
            if not row["method"].endswith("+balanced"):
                assert row["conflict_rate_ci"][0] <= row["conflict_rate"] <= row["conflict_rate_ci"][1]
        else:
            assert row["conflict_rate"] is None and row["mae"] is not None
    rlvr = next(row for row in saved["rows"] if row["method"] == "RLVR judge")
    assert rlvr["spearman"] is not None and rlvr["spearman_ci"][0] <= rlvr["spearman"] <= rlvr["spearman_ci"][1]
    trained = {row["method"]: row["train_seconds"] for row in saved["rows"]}
    assert all(trained[m] > 0 for m in methods - {"formula"}) and trained["formula"] is None
    assert "| pairwise judge | test |" in (tmp_path / "compare" / "compare.md").read_text()
    assert (tmp_path / "compare" / "compare.csv").exists() and "pair accuracy" in result.output
    for name, consistent in (("pairwise", False), ("pairwise_consistent", True)):
        trained_config = yaml.safe_load((tmp_path / "compare" / name / "config.yaml").read_text())
        assert trained_config["swap_consistency"] is consistent and trained_config["margin"] == 3  # the flag reached it


# Leave-one-family-out ----------------------------------------------------------------------------------------------
def test_lofo_trains_the_preference_methods_per_fold(tmp_path):
    import json

    import pandas as pd

    from ehrjudge.train.lofo import LofoConfig, run_lofo

    # Setup: the tiny task with its records split over two families (alternating within each sex)
    dataset = tiny_dataset(tmp_path / "data", n_train=48, n_eval=24, seed=3)
    for split in ("train", "val", "test", "test_unseen"):
        frame = pd.read_parquet(dataset / f"{split}.parquet").sort_values("gender", kind="stable")
        frame["generator"] = np.where(np.arange(len(frame)) % 2 == 0, "fam_a", "fam_b")
        frame.to_parquet(dataset / f"{split}.parquet")
    base = _base((dataset, save_tiny_judge(tmp_path / "tiny-llama", seed=0)), max_steps=3, eval_every=3,
                 batch_size=4)
    config = LofoConfig(dataset=str(dataset), output_dir=str(tmp_path / "lofo"), judge=base,
                        scorers=["formula", "bradley_terry", "dpo"], judge_train_records=24, judge_val_records=8,
                        n_bootstrap=50)
    # Run
    result = run_lofo(config)
    # Assert: both methods trained on each fold without its family, with a Spearman row and a mean over folds
    assert [fold["family"] for fold in result["folds"]] == ["fam_a", "fam_b"]
    for fold in result["folds"]:
        fold_dir = tmp_path / "lofo" / "folds" / fold["family"]
        trained_on = pd.concat([pd.read_parquet(fold_dir / "dataset" / f"{s}.parquet") for s in ("train", "val")])
        assert fold["family"] not in set(trained_on["generator"])
        for scorer in ("bradley_terry", "dpo"):
            assert fold[f"{scorer}_training"]["steps"] == 3
            assert set(fold["scorers"][scorer]) >= {"spearman", "pearson", "mae"}
        assert json.loads((fold_dir / "dpo" / "summary.json").read_text())["method"] == "dpo"
        assert (fold_dir / "bradley_terry" / "final" / "head.pt").exists()
    assert set(result["mean"]) == {"formula", "bradley_terry", "dpo"} and result["mean"]["dpo"]["n_folds"] == 2


def test_compare_refuses_an_unknown_method_to_train():
    from ehrjudge.config import load_config
    from ehrjudge.errors import ConfigError
    from ehrjudge.train.preference_config import CompareConfig

    # Run / Assert: named before any work
    with pytest.raises(ConfigError, match=r"unknown method\(s\) to train \['ppo'\]"):
        load_config(CompareConfig, None, ["--train", "dpo,ppo"])


def test_compare_reads_a_run_folder_by_its_conventional_names(tiny, tmp_path):
    import shutil

    from ehrjudge.errors import InputError
    from ehrjudge.train.compare import resolve_inputs
    from ehrjudge.train.preference_config import CompareConfig

    # Setup: a run folder with dataset/, judge/ and dpo/, and an explicit pairwise folder elsewhere
    run = tmp_path / "run"
    shutil.copytree(tiny[0], run / "dataset")
    for name in ("judge", "dpo"):
        (run / name).mkdir()
    (tmp_path / "pw").mkdir()
    # Run
    dataset, folders = resolve_inputs(CompareConfig(run=str(run), pairwise_dir=str(tmp_path / "pw")))
    # Assert: what the run holds is found, what it lacks is absent, an explicit folder wins
    assert dataset == run / "dataset"
    assert folders == {"RLVR judge": run / "judge", "DPO judge": run / "dpo", "pairwise judge": tmp_path / "pw"}
    with pytest.raises(InputError, match=r"Bradley-Terry folder not found \(--bradley-terry-dir\)"):
        resolve_inputs(CompareConfig(run=str(run), bradley_terry_dir=str(tmp_path / "missing")))


@pytest.mark.parametrize("method", ["bradley_terry", "pairwise"])
def test_resumed_pair_run_equals_an_uninterrupted_one(tiny, tmp_path, method):
    import json

    from ehrjudge.train.bradley_terry import train_bradley_terry
    from ehrjudge.train.pairwise import train_pairwise
    from ehrjudge.train.preference_config import BradleyTerryConfig, PairwiseConfig

    # Setup
    def config(out):
        # dropout on for pairwise (its RNG is restored); off for Bradley-Terry, whose first-visit frozen passes
        # (lower-layer cache) draw dropout masks in an order a resumed run cannot repeat
        base = _base(tiny, max_steps=8, eval_every=4, checkpoint_every=4,
                     lora_dropout=0.0 if method == "bradley_terry" else 0.1)
        if method == "bradley_terry":
            return BradleyTerryConfig(output_dir=str(out), base=base)
        return PairwiseConfig(output_dir=str(out), base=base, eval_pairs=8, swap_consistency=True)

    trainer = train_bradley_terry if method == "bradley_terry" else train_pairwise
    # Run: uninterrupted; killed after step 4 then resumed
    whole = trainer(config(tmp_path / "whole"))
    stopped = trainer(config(tmp_path / "split"), stop_at_step=4)
    resumed = trainer(config(tmp_path / "split"), resume=True)
    # Assert: the same losses, evaluations and final weights
    assert stopped == {"stopped_by": "stop_at_step", "step": 4}
    assert resumed["last_loss"] == pytest.approx(whole["last_loss"], abs=1e-6)
    assert resumed["first_loss"] == pytest.approx(whole["first_loss"], abs=1e-6)
    if method == "bradley_terry":
        assert resumed["val_spearman"] == pytest.approx(whole["val_spearman"], abs=1e-6)
        assert resumed["calibration"]["slope"] == pytest.approx(whole["calibration"]["slope"], rel=1e-5)
    else:
        assert resumed["initial_validation"] == whole["initial_validation"]
        assert resumed["final_validation"] == whole["final_validation"]
    from safetensors.torch import load_file

    weights = [load_file(tmp_path / run / "final" / "adapter_model.safetensors") for run in ("whole", "split")]
    assert all(torch.allclose(weights[0][k], weights[1][k], atol=1e-6) for k in weights[0])
    steps = [json.loads(line)["step"] for line in (tmp_path / "split" / "metrics.jsonl").read_text().splitlines()
             if "train/loss" in json.loads(line)]
    assert steps == list(range(1, 9))


def test_compare_resumes_a_killed_method_only_with_the_same_settings(tiny, tmp_path):
    import dataclasses

    from ehrjudge.train.compare import resumable
    from ehrjudge.train.pairwise import train_pairwise
    from ehrjudge.train.preference_config import PairwiseConfig

    # Setup: a pairwise run killed after step 4 (checkpoint at 4), and one folder never trained
    settings = PairwiseConfig(output_dir=str(tmp_path / "pw"), eval_pairs=8,
                              base=_base(tiny, max_steps=8, eval_every=4, checkpoint_every=4))
    train_pairwise(settings, stop_at_step=4)
    # Run / Assert: the same settings resume; another budget, another method's settings or no checkpoint do not
    assert resumable(tmp_path / "pw", settings)
    assert not resumable(tmp_path / "pw", dataclasses.replace(settings, base=dataclasses.replace(settings.base,
                                                                                                 max_steps=16)))
    assert not resumable(tmp_path / "pw", dataclasses.replace(settings, swap_consistency=True))
    assert not resumable(tmp_path / "never", settings)


def test_methods_trained_by_compare_share_the_runs_rlvr_settings(tmp_path):
    import yaml

    from ehrjudge.config import load_config
    from ehrjudge.train.preference_config import CompareConfig, run_defaults

    # Setup: a run whose RLVR training used its own learning rate, budget and KL
    (tmp_path / "config.yaml").write_text(yaml.safe_dump({"train": {"learning_rate": 0.005, "max_steps": 7,
                                                                     "kl_coef": 0.05, "output_dir": "x"}}))
    # Run: the run's settings first, then a flag
    config = load_config(CompareConfig, None, ["--dpo.base.max-steps", "9"], base=run_defaults(tmp_path))
    # Assert: same learning rate everywhere, KL off, the pairwise budget kept, the flag wins
    assert {config.bradley_terry.base.learning_rate, config.dpo.base.learning_rate,
            config.pairwise.base.learning_rate} == {0.005}
    assert config.bradley_terry.base.max_steps == 7 and config.dpo.base.max_steps == 9
    assert config.pairwise.base.max_steps == 128 and config.pairwise.base.batch_size == 4
    assert {config.bradley_terry.base.kl_coef, config.dpo.base.kl_coef, config.pairwise.base.kl_coef} == {0.0}
    assert run_defaults(tmp_path / "no-run") == {}
