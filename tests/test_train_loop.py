"""Tiny-model training runs: parameters move and agreement rises, resume equals an uninterrupted run,
kl_coef 0 never touches the reference, every method runs."""

import json

import pytest
import torch

from ehrjudge.judge.tiny import tiny_judge
from ehrjudge.train import policy as policy_module
from ehrjudge.train.config import TrainConfig
from ehrjudge.train.loop import train
from ehrjudge.train.tiny import TINY_PROMPT, tiny_dataset


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    return tiny_dataset(tmp_path_factory.mktemp("data") / "tiny", n_train=32, n_eval=16, seed=0)


def _config(dataset, out, **overrides):
    values = dict(dataset=str(dataset), output_dir=str(out), tracking="none", lora_r=8, train_layers=1,
                  learning_rate=1e-2, batch_size=8, epochs=2, eval_every=4, checkpoint_every=4, warmup_steps=1,
                  val_records=0, train_records=0, max_steps=0, max_wall_minutes=0, prompt=TINY_PROMPT, seed=3)
    values.update(overrides)
    return TrainConfig(**values)


def _eval_history(run_dir):
    lines = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [(line["step"], line["eval/spearman"]) for line in lines if "eval/spearman" in line]


def test_expected_run_moves_every_parameter_and_raises_agreement(dataset, tmp_path):
    # Setup
    model, tokenizer = tiny_judge(seed=0, layers=2, hidden=64)
    config = _config(dataset, tmp_path / "run")
    # Run
    summary = train(config, model_and_tokenizer=(model, tokenizer), show_progress=False)
    # Assert: every LoRA parameter moved (B starts at 0, A at random), validation Spearman rose from step 0
    trainable = {n: p for n, p in model.named_parameters() if p.requires_grad}
    assert trainable and all("lora_" in n for n in trainable)
    history = _eval_history(tmp_path / "run")
    assert history[0][0] == 0 and history[-1][0] == summary["steps"] == 8
    maes = [line["eval/mae"] for line in map(json.loads, (tmp_path / "run" / "metrics.jsonl").read_text().splitlines())
            if "eval/mae" in line]
    assert summary["best_val_spearman"] > history[0][1] + 0.2
    assert maes[-1] < 0.75 * maes[0]
    assert (tmp_path / "run" / "best" / "adapter_config.json").exists()
    assert (tmp_path / "run" / "config.yaml").exists()
    # the best checkpoint carries the calibration fitted on its own validation (rising agreement: slope > 0)
    best = json.loads((tmp_path / "run" / "best" / "validation.json").read_text())
    assert best["calibration"]["slope"] > 0 and best["calibration"]["n"] == 16
    assert json.loads((tmp_path / "run" / "best" / "calibration.json").read_text()) == best["calibration"]
    assert summary["final_calibration"] == json.loads((tmp_path / "run" / "final" / "calibration.json").read_text())


def test_every_trainable_parameter_moves(dataset, tmp_path):
    # Setup: snapshot the trainable parameters right after the adapter is attached
    model, tokenizer = tiny_judge(seed=0, layers=2, hidden=64)
    snapshots = {}
    from ehrjudge.train import loop

    original = loop.attach_trainable

    def attach_and_snapshot(base, config):
        wrapped = original(base, config)
        snapshots.update({n.removeprefix("base_model.model."): p.detach().clone()
                          for n, p in wrapped.named_parameters() if p.requires_grad})
        return wrapped

    loop.attach_trainable = attach_and_snapshot
    try:
        # Run
        train(_config(dataset, tmp_path / "run", epochs=1), model_and_tokenizer=(model, tokenizer),
              show_progress=False)
    finally:
        loop.attach_trainable = original
    # Assert
    after = {n: p.detach() for n, p in model.named_parameters() if p.requires_grad}
    assert set(after) == set(snapshots) and len(after) > 0
    unchanged = [n for n in after if torch.equal(after[n], snapshots[n])]
    assert unchanged == []


@pytest.mark.parametrize("method", ["reinforce", "grpo"])
def test_resume_equals_uninterrupted(dataset, tmp_path, method):
    # Setup: sampling methods, so the sampler RNG and the data position must both be restored
    overrides = dict(method=method, epochs=1, checkpoint_every=2, eval_every=100, grpo_iterations=2)
    model_a, tokenizer = tiny_judge(seed=0, layers=2, hidden=64)
    model_b, _ = tiny_judge(seed=0, layers=2, hidden=64)
    model_c, _ = tiny_judge(seed=0, layers=2, hidden=64)
    # Run: 4 steps straight; 2 steps then a "kill"; a fresh process (new model) resuming to 4
    train(_config(dataset, tmp_path / "straight", **overrides), model_and_tokenizer=(model_a, tokenizer),
          show_progress=False)
    killed = train(_config(dataset, tmp_path / "resumed", **overrides), model_and_tokenizer=(model_b, tokenizer),
                   show_progress=False, stop_at_step=2)
    resumed = train(_config(dataset, tmp_path / "resumed", **overrides), model_and_tokenizer=(model_c, tokenizer),
                    show_progress=False, resume=True)
    # Assert
    assert killed["step"] == 2 and resumed["steps"] == 4
    straight = {n: p for n, p in model_a.named_parameters() if p.requires_grad}
    continued = {n: p for n, p in model_c.named_parameters() if p.requires_grad}
    assert set(straight) == set(continued)
    for name in straight:
        assert torch.equal(straight[name], continued[name]), name


def test_kl_zero_never_computes_a_reference(dataset, tmp_path, monkeypatch):
    # Setup: any use of the reference path or of the adapter switch fails the run
    def forbidden(*args, **kwargs):
        raise AssertionError("reference path used with kl_coef 0")

    monkeypatch.setattr(policy_module.LabelPolicy, "reference", forbidden)
    monkeypatch.setattr(policy_module, "adapter_disabled", forbidden)
    model, tokenizer = tiny_judge(seed=0, layers=2, hidden=64)
    # Run
    summary = train(_config(dataset, tmp_path / "run", kl_coef=0.0, epochs=1), model_and_tokenizer=(model, tokenizer),
                    show_progress=False)
    # Assert
    assert summary["steps"] == 4


def test_kl_positive_uses_cached_reference_once_per_record(dataset, tmp_path):
    # Setup
    model, tokenizer = tiny_judge(seed=0, layers=2, hidden=64)
    # Run: 2 epochs over 32 records with kl 0.1 and full fine-tuning of the top layer (reference cached up front)
    summary = train(_config(dataset, tmp_path / "run", kl_coef=0.1, lora_r=0, learning_rate=1e-3),
                    model_and_tokenizer=(model, tokenizer), show_progress=False)
    # Assert: one KL value per logged step, finite, and the reference cached for every training record
    lines = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    kls = [line["train/kl"] for line in lines if "train/kl" in line]
    assert summary["steps"] == 8 and kls and all(k >= -1e-6 for k in kls)
    state = torch.load(sorted((tmp_path / "run" / "checkpoints").glob("step-*"))[-1] / "state.pt", weights_only=False)
    assert len(state["reference_cache"]) == 32


def _adapter(run_dir):
    from safetensors.torch import load_file

    return load_file(run_dir / "final" / "adapter_model.safetensors")


@pytest.mark.parametrize("method", ["expected", "grpo"])
def test_same_seed_trains_the_same_adapter(dataset, tmp_path, method):
    # Setup: the budget is steps, so nothing about the machine's speed enters the result
    def run(name, seed):
        model, tokenizer = tiny_judge(seed=0, layers=2, hidden=64)
        config = _config(dataset, tmp_path / name, method=method, seed=seed, max_steps=6, epochs=5,
                         max_wall_minutes=40.0)
        return train(config, model_and_tokenizer=(model, tokenizer), show_progress=False)

    # Run
    first, second, other = run("a", 3), run("b", 3), run("c", 4)
    # Assert: the same weights bit for bit, a budget in steps that was reached, a different seed differs
    a, b, c = _adapter(tmp_path / "a"), _adapter(tmp_path / "b"), _adapter(tmp_path / "c")
    assert set(a) == set(b) and any("lora_B" in name for name in a)
    assert all(torch.equal(a[name], b[name]) for name in a)
    assert all(a[name].abs().sum() > 0 for name in a if "lora_B" in name)  # training moved B away from 0
    assert not all(torch.equal(a[name], c[name]) for name in a)
    assert first["steps"] == second["steps"] == 6
    assert first["stopped_by"] == "max_steps" and not first["wall_cap_fired"]


def test_wall_cap_is_a_reported_safety_stop(dataset, tmp_path, caplog):
    # Setup: a cap so small that it fires before the first step
    model, tokenizer = tiny_judge(seed=0, layers=2, hidden=64)
    config = _config(dataset, tmp_path / "run", max_steps=6, max_wall_minutes=1e-6)
    # Run
    with caplog.at_level("WARNING", logger="ehrjudge.train.loop"):
        summary = train(config, model_and_tokenizer=(model, tokenizer), show_progress=False)
    # Assert: reported in the summary and the log
    assert summary["stopped_by"] == "wall time" and summary["wall_cap_fired"]
    assert summary["steps"] < summary["budget_steps"] == 6
    assert "safety stop" in caplog.text and "not reproducible" in caplog.text
    assert json.loads((tmp_path / "run" / "summary.json").read_text())["wall_cap_fired"] is True
    history = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [line["step"] for line in history if line.get("train/wall_cap_fired") == 1.0] == [summary["steps"]]


def test_epochs_end_the_run_when_they_come_before_max_steps(dataset, tmp_path):
    # Setup: 32 records in batches of 8 are 4 steps an epoch
    model, tokenizer = tiny_judge(seed=0, layers=2, hidden=64)
    # Run
    summary = train(_config(dataset, tmp_path / "run", epochs=1, max_steps=550),
                    model_and_tokenizer=(model, tokenizer), show_progress=False)
    # Assert
    assert summary["steps"] == 4 and summary["stopped_by"] == "epochs"
