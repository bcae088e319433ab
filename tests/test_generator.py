"""tune-generator: the record text format, parse failures, the GRPO step, and the command end to end."""

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from ehrjudge.cohort.schema import Cohort, FeatureSpec, Schema
from ehrjudge.config import to_dict
from ehrjudge.generator.config import TuneConfig
from ehrjudge.generator.evaluate import SUITE_SHOWN, with_failures
from ehrjudge.generator.grpo import advantages, grpo_loss
from ehrjudge.generator.model import TunedGenerator, parse_completions
from ehrjudge.generator.policy import PROMPT, add_lora, sample
from ehrjudge.generator.record_text import RecordFormat, RecordParseError, column_keys
from ehrjudge.generator.tune import runaway_step, tune_generator
from ehrjudge.judge.tiny import save_tiny_judge, tiny_judge
from ehrjudge.synth.toy import toy_cohort
from ehrjudge.train.tiny import TINY_PROMPT


@pytest.fixture(scope="module")
def cohort_dirs(tmp_path_factory):
    """A judge-dataset-like folder: reference/ (150 toy patients) and holdout/ (50) beside it."""
    root = tmp_path_factory.mktemp("cohort")
    cohort = toy_cohort(200, seed=0)
    for name, rows in (("reference", slice(0, 150)), ("holdout", slice(150, 200))):
        (root / name).mkdir()
        Cohort(cohort.vectors.iloc[rows].reset_index(drop=True), cohort.schema).save(root / name)
    return root


def test_round_trip_is_exact_on_real_records_and_rounds_continuous_values_only():
    # Setup: the toy cohort (counts, binaries, continuous age and length of stay)
    cohort = toy_cohort(120, seed=3)
    matrix = cohort.matrix()
    exact, rounded = RecordFormat(cohort.schema, digits=None), RecordFormat(cohort.schema, digits=2)
    # Run
    back = np.stack([exact.parse(exact.to_text(row)) for row in matrix])
    back2 = np.stack([rounded.parse(rounded.to_text(row)) for row in matrix])
    # Assert: exact at full precision; at 2 digits counts and binaries are untouched, continuous within 5 %
    np.testing.assert_array_equal(back, matrix)
    discrete = np.array([f.kind != "continuous" for f in cohort.schema.features])
    np.testing.assert_array_equal(back2[:, discrete], matrix[:, discrete])
    np.testing.assert_allclose(back2[:, ~discrete], matrix[:, ~discrete], rtol=0.05)


def test_keys_drop_group_prefixes_and_a_shared_code_prefix():
    # Setup: MIMIC-like names
    schema = Schema([FeatureSpec("gender", "demographics", "binary", ""),
                     FeatureSpec("is_dead", "demographics", "binary", ""),
                     FeatureSpec("diagnoses_count", "diagnoses", "count", ""),
                     FeatureSpec("dx_icd10_i10", "diagnoses", "count", "", "ICD10:I10"),
                     FeatureSpec("dx_icd10_e119", "diagnoses", "count", "", "ICD10:E119"),
                     FeatureSpec("labs_mean", "labs", "continuous", ""),
                     FeatureSpec("lab_glucose", "labs", "count", "", "glucose")])
    # Run
    keys = {group: [key for key, _ in entries] for group, entries in column_keys(schema).items()}
    text = RecordFormat(schema, digits=3).to_text(np.array([1, 0, 2, 1, 1, 6.123, 3]))
    # Assert
    assert keys == {"demographics": ["gender", "dead"], "diagnoses": ["count", "i10", "e119"],
                    "labs": ["mean", "glucose"]}
    assert text == "demographics: gender 1 dead 0\ndiagnoses: count 2 i10 1 e119 1\nlabs: mean 6.12 glucose 3"


@pytest.mark.parametrize("text, reason", [
    ("demographics: gender 1 age 40 dead 0", "non-empty line"),
    ("demographics: gender 1 age forty dead 0\nadmissions:\ndiagnoses:\nprescriptions:\nlabs:", "not a number"),
    ("demographics: gender 1 age 40 dead 0\nadmissions:\ndiagnoses: Z99 1\nprescriptions:\nlabs:",
     "not a column"),
    ("demographics: gender 1 gender 0 dead 0\nadmissions:\ndiagnoses:\nprescriptions:\nlabs:", "given twice"),
    ("demographics: gender 1 age\nadmissions:\ndiagnoses:\nprescriptions:\nlabs:", "without a value"),
    ("labs: gender 1\nadmissions:\ndiagnoses:\nprescriptions:\nlabs:", "expected a line starting"),
    ("demographics: gender 1 age 1e99 dead 0\nadmissions:\ndiagnoses:\nprescriptions:\nlabs:", "out of range"),
])
def test_unparsable_text_raises_with_its_reason(text, reason):
    fmt = RecordFormat(toy_cohort(20).schema)
    with pytest.raises(RecordParseError, match=reason):
        fmt.parse(text)


def test_unparsable_completions_are_counted_and_get_the_failure_reward():
    # Setup: one good record, one garbled, one cut off at max_new_tokens
    cohort = toy_cohort(20)
    fmt = RecordFormat(cohort.schema)
    good = fmt.to_text(cohort.matrix()[0])
    # Run
    samples = parse_completions([good, "hello", good], [True, True, False], fmt, "g", "g")
    rewards = with_failures(np.array([7.5]), samples, failure_value=1.0)
    # Assert
    assert samples.parsed.tolist() == [True, False, False] and len(samples.records) == 1
    assert samples.failure_rate == pytest.approx(2 / 3)
    assert "cut off" in samples.failures[1] and "non-empty line" in samples.failures[0]
    np.testing.assert_array_equal(rewards, [7.5, 1.0, 1.0])
    np.testing.assert_array_equal(samples.records[cohort.schema.names].to_numpy()[0], cohort.matrix()[0])


def test_advantages_are_group_normalized_and_zero_for_equal_rewards():
    np.testing.assert_allclose(advantages(torch.tensor([1.0, 3.0])), [-0.7071, 0.7071], atol=1e-3)
    assert advantages(torch.tensor([5.0, 5.0, 5.0])).abs().max() == 0


def test_grpo_on_a_tiny_model_raises_the_reward_and_moves_every_lora_parameter(one_torch_thread):
    # Setup: reward = the first completion token's embedding projected on a fixed random direction u (a dense
    # reward the tiny random policy, whose next-token distribution is nearly flat, can climb)
    model, tokenizer = tiny_judge(seed=1)
    policy = add_lora(model, r=4, alpha=8, train_layers=0, seed=0)
    initial = {n: p.detach().clone() for n, p in policy.named_parameters() if p.requires_grad}
    start = len(tokenizer(PROMPT, add_special_tokens=False).input_ids)  # the first completion token's position
    embedding = model.get_input_embeddings().weight.detach().clone()
    direction = torch.randn(embedding.shape[1], generator=torch.Generator().manual_seed(0))
    projection = embedding @ (direction / direction.norm()) / embedding.std()  # (V,) about N(0, 1)
    optimizer = torch.optim.AdamW([p for p in policy.parameters() if p.requires_grad], lr=2e-2)

    def mean_reward(seed):
        _, ids, _, _ = sample(policy, tokenizer, 256, 1, 1.0, seed=seed, batch_size=256)
        return projection[ids[:, start]].mean().item()

    before = mean_reward(1000)
    # Run: 15 GRPO steps of 16 completions of 3 tokens
    for step in range(15):
        _, ids, mask, _ = sample(policy, tokenizer, 16, 3, 1.0, seed=step, batch_size=16)
        policy.train()
        loss, parts = grpo_loss(policy, ids, mask, advantages(projection[ids[:, start]]), kl_coef=0.01)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    after = mean_reward(1000)
    # Assert: measured 0.11 -> 0.83 (256 samples each: standard error ~0.06)
    assert after > before + 0.4, (before, after)
    moved = [n for n, p in policy.named_parameters() if p.requires_grad and not torch.equal(p, initial[n])]
    assert len(moved) == len(initial) > 0
    assert parts["rl/kl"] > 0


def test_runaway_step_is_the_first_step_whose_five_step_mean_gap_exceeds_half_a_point():
    history = [{"step": s, "rl/hacking_gap": g} for s, g in enumerate([0, 0.1, 0.2, 0.6, 0.9, 1.2, 1.5], 1)]
    assert runaway_step(history) == 6  # mean of steps 2..6 = 0.6
    assert runaway_step([{"step": 1, "rl/hacking_gap": 0.1}]) is None
    assert runaway_step([{"step": 1}]) is None


def _tiny_judge_folder(path: Path) -> Path:
    save_tiny_judge(path)
    (path / "ehrjudge.json").write_text(json.dumps({"prompt": to_dict(TINY_PROMPT)}))
    return path


@pytest.mark.parametrize("reward", ["judge", "score", "formula", "none"])
def test_tune_generator_end_to_end_with_each_reward(tmp_path, cohort_dirs, reward, one_torch_thread):
    # Setup: the tiny random policy and judge (their records do not parse: the wiring, not the quality)
    policy_dir = save_tiny_judge(tmp_path / "policy", seed=2)
    judge_dir = _tiny_judge_folder(tmp_path / "judge")
    config = TuneConfig(reward=reward, model=str(policy_dir), sft_steps=2, sft_batch_size=2, rl_steps=2,
                        group_size=2, eval_records=4, eval_batch_size=4, max_new_tokens=8, tracking="none")
    out = tmp_path / "run"
    # Run
    summary = tune_generator(cohort_dirs / "reference", out, config, judge_dir=judge_dir)
    # Assert: every figure is there, unparsed completions are counted, the generator folder loads and samples
    tuned, copula = summary["rows"]["tuned"], summary["rows"]["gaussian_copula"]
    assert tuned["records"] == 4 and tuned["parse_failure_rate"] == 1.0 and tuned["hardened_mean"] == 1.0
    assert "judge_mean" in copula and copula["parse_failure_rate"] == 0.0 and copula["distinct_rate"] > 0.9
    assert set(SUITE_SHOWN) <= set(copula["suite"])  # the report's suite columns name real suite metrics
    assert summary["rl_steps"] == (0 if reward == "none" else 2)
    assert len(summary["history"]) == summary["rl_steps"]
    assert ("reward_mean" in tuned) == (reward != "none")
    for row in summary["history"]:
        assert row["rl/reward_mean"] == config.parse_failure_reward and row["rl/parse_failure_rate"] == 1.0
    assert (out / "report.html").read_text().count("<tr>") == 3
    assert (out / "generator" / "rl").is_dir() == (reward != "none")
    loaded = TunedGenerator.load(out / "generator").sample(3, seed=0, batch_size=3)
    assert len(loaded.parsed) == 3 and len(loaded.failures) == 3


def test_a_resumed_run_continues_as_an_uninterrupted_one(tmp_path, cohort_dirs, one_torch_thread):
    # Setup: a 3-step run straight through, and a 2-step run then the same command asked for 3 steps
    policy_dir = save_tiny_judge(tmp_path / "policy", seed=2)
    config = TuneConfig(reward="score", model=str(policy_dir), sft_steps=1, sft_batch_size=2, rl_steps=3,
                        group_size=2, eval_records=2, eval_batch_size=2, max_new_tokens=6, tracking="none")
    straight = tune_generator(cohort_dirs / "reference", tmp_path / "straight", config)
    tune_generator(cohort_dirs / "reference", tmp_path / "resumed", TuneConfig(**{**vars(config), "rl_steps": 2}))
    # Run
    resumed = tune_generator(cohort_dirs / "reference", tmp_path / "resumed", config)

    def figures(history):
        return [{k: v for k, v in row.items() if not k.startswith("time/")} for row in history]

    # Assert: the same steps with the same samples' figures; the warm start was reused, not retrained
    assert [r["step"] for r in resumed["history"]] == [1, 2, 3]
    assert figures(resumed["history"]) == figures(straight["history"])
    assert resumed["rows"]["tuned"]["records"] == 2


def test_reward_judge_without_a_judge_is_refused(tmp_path, cohort_dirs):
    from ehrjudge.errors import InputError

    with pytest.raises(InputError, match="--judge"):
        tune_generator(cohort_dirs / "reference", tmp_path / "run", TuneConfig(reward="judge"))
    assert not (tmp_path / "run").exists()


def test_gate_refuses_a_generator_whose_completions_do_not_parse_and_registers_its_checkpoint(tmp_path, cohort_dirs,
                                                                                              one_torch_thread):
    import mlflow

    from ehrjudge.errors import InputError
    from ehrjudge.pipeline.gate import GateConfig, decide, register, run_gate

    # Setup: a tuned generator folder from the tiny random policy (no completion parses)
    policy_dir = save_tiny_judge(tmp_path / "policy", seed=2)
    config = TuneConfig(reward="none", model=str(policy_dir), sft_steps=1, sft_batch_size=2, eval_records=2,
                        eval_batch_size=2, max_new_tokens=6, tracking="none")
    tune_generator(cohort_dirs / "reference", tmp_path / "run", config)
    generator = tmp_path / "run" / "generator"
    gate = GateConfig(records=3, registry_dir=str(tmp_path / "mlruns"), reference=str(cohort_dirs / "reference"))
    # Run / Assert: sampling the checkpoint finds nothing to judge, and says so with the first reason
    with pytest.raises(InputError, match="none of the 3 sampled completions parses") as error:
        run_gate(str(_tiny_judge_folder(tmp_path / "judge")), None, "gen", gate, str(generator))
    assert str(generator) in str(error.value)
    # a parse-failure rate over the limit refuses whatever the judge says
    assert decide(9.0, 0.0, gate, 3, parse_failure_rate=0.5).reasons == [
        "parse-failure rate 0.500 exceeds the limit 0.050"]
    # an accepted checkpoint is registered itself: the registered model samples new records from it
    accepted = register(decide(9.0, 0.0, gate, 3), tmp_path / "unused.parquet", "tuned-x", gate, {}, generator)
    assert accepted.version == "1"
    sampled = mlflow.pyfunc.load_model("models:/tuned-x/1").predict(pd.DataFrame({"n": [2], "seed": [0]}))
    assert list(sampled.columns) == ["record_id", "generator", *Cohort.load(cohort_dirs / "reference").schema.names]
    assert len(sampled) == 0  # the tiny policy's completions do not parse; they are dropped, not invented
