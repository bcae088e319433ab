"""One source for each setting: TrainConfig's defaults are the default profile, one realism score per run,
the run's `tracking: none` reaches training."""

from pathlib import Path

import pytest
import yaml

from ehrjudge.config import load_config
from ehrjudge.errors import ConfigError
from ehrjudge.pipeline.config import PROFILES, RunConfig, run_settings
from ehrjudge.scoring.realism import ScoreConfig
from ehrjudge.train.config import TrainConfig

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


def test_train_defaults_are_the_default_profile_and_the_shipped_yaml():
    # Setup: the measured best (docs/training.md)
    defaults = TrainConfig()
    # Run
    from_yaml = load_config(TrainConfig, CONFIGS / "train_default.yaml")
    from_profile = load_config(RunConfig, None, None, base=PROFILES["default"]).train
    # Assert
    assert from_yaml == defaults and from_profile == defaults
    assert (defaults.learning_rate, defaults.kl_coef, defaults.max_steps) == (2e-3, 0.05, 256)
    assert defaults.max_wall_minutes == 0  # the wall-clock safety stop is off unless asked for
    assert defaults.prompt.record_format == "findings_dcr" and defaults.prompt.max_record_tokens == 192


def test_one_realism_score_for_dataset_and_suite(tmp_path):
    # Run
    cfg = load_config(RunConfig, None, ["--score.k", "3", "--score.definition", "seed"])
    # Assert: both stages use the run's score
    assert cfg.dataset_config().score == cfg.suite_config().score == ScoreConfig(k=3, definition="seed")
    # a score set under a section is refused, naming where it belongs
    for section in ("dataset", "suite"):
        with pytest.raises(ConfigError, match=rf"{section}\.score: .*`score:`"):
            load_config(RunConfig, None, [f"--{section}.score.k", "3"])
    # the saved config holds the score once and loads back to the same config
    settings = run_settings(cfg)
    assert "score" not in settings["dataset"] and "score" not in settings["suite"] and settings["score"]["k"] == 3
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(settings))
    assert load_config(RunConfig, path) == cfg


def test_the_run_score_labels_the_dataset_and_reaches_the_gate(tmp_path):
    # Setup: a toy cohort and a run whose one score is not the default
    import numpy as np
    import pandas as pd

    from ehrjudge.cohort.schema import Cohort
    from ehrjudge.scoring.config import dataset_score_config
    from ehrjudge.pipeline.run import build_dataset_stage
    from ehrjudge.scoring.realism import score_records
    from ehrjudge.synth.toy import toy_cohort

    toy_cohort(200, seed=0).save(tmp_path / "cohort")
    cfg = load_config(RunConfig, None, ["--score.k", "3", "--score.definition", "seed", "--dataset.size", "150"])
    # Run
    build_dataset_stage(cfg, tmp_path / "cohort", tmp_path / "dataset")
    # Assert: the labels are the run's score, recomputed independently, not the default score's
    dataset = tmp_path / "dataset"
    records = pd.read_parquet(dataset / "test.parquet")
    reference, holdout = Cohort.load(dataset / "reference"), Cohort.load(dataset / "holdout")
    features = records[["record_id", *reference.schema.names]]
    run_score = score_records(reference, features, cfg.score, holdout)["realism_score"].to_numpy()
    default_score = score_records(reference, features, ScoreConfig(), holdout)["realism_score"].to_numpy()
    np.testing.assert_array_equal(records["realism_score"].to_numpy(), run_score)
    assert not np.array_equal(run_score, default_score)
    # the gate reads the score the dataset was labelled with
    assert dataset_score_config(dataset / "reference") == cfg.score


@pytest.mark.usefixtures("one_torch_thread")
def test_run_tracking_none_turns_off_training_trackers(tmp_path):
    # Setup: a real tiny training through the run's train stage, whose own default is mlflow + tensorboard
    from ehrjudge.judge.tiny import save_tiny_judge
    from ehrjudge.pipeline.run import build_train_stage
    from ehrjudge.train.tiny import TINY_PROMPT, tiny_dataset

    dataset = tiny_dataset(tmp_path / "data", n_train=8, n_eval=4, seed=0)
    model = save_tiny_judge(tmp_path / "tiny")
    train = TrainConfig(model=str(model), train_layers=1, lora_r=4, batch_size=4, max_steps=2, eval_every=2,
                        checkpoint_every=2, train_records=0, prompt=TINY_PROMPT)
    assert train.tracking == "mlflow,tensorboard"
    run = tmp_path / "run"
    (run / "train").mkdir(parents=True)
    work = run / ".work" / "train"
    # Run
    build_train_stage(RunConfig(train=train, tracking="none"), dataset, work, run / "train")
    # Assert: trained, and nothing tracked anywhere
    assert (run / "train" / "judge" / "adapter_config.json").exists()
    assert yaml.safe_load((run / "train" / "config.yaml").read_text())["tracking"] == "none"
    tracked = [p for p in tmp_path.rglob("*") if p.name in ("mlruns", "tensorboard", "mlflow.db", "mlartifacts")]
    assert tracked == []


SHIPPED = {"train_default.yaml": "ehrjudge.train.config:TrainConfig",
           "ablate_small.yaml": "ehrjudge.train.ablate_config:AblateConfig"}


def leaf_paths(data: dict, prefix: tuple = ()) -> list[tuple]:
    """Every key path of a nested mapping that ends in a value (not a mapping)."""
    paths = []
    for key, value in data.items():
        paths += leaf_paths(value, prefix + (key,)) if isinstance(value, dict) else [prefix + (key,)]
    return paths


def at(data: dict, path: tuple):
    for key in path:
        data = data[key]
    return data


@pytest.mark.parametrize("name", sorted(p.name for p in CONFIGS.glob("*.yaml")))
def test_shipped_yaml_sets_only_values_that_differ_from_the_defaults(name):
    # Setup: the dataclass the file configures (a new file must be named here)
    import importlib

    from ehrjudge.config import to_dict

    module, cls_name = SHIPPED[name].split(":")
    cls = getattr(importlib.import_module(module), cls_name)
    written = yaml.safe_load((CONFIGS / name).read_text()) or {}
    # Run: the resolved config (typed, nested mappings over the field's own default) against the defaults
    resolved, defaults = to_dict(load_config(cls, CONFIGS / name)), to_dict(cls())
    # Assert: every key the file sets changes the value, so each setting has one source
    same = [".".join(path) for path in leaf_paths(written) if at(resolved, path) == at(defaults, path)]
    assert same == [], f"{name} repeats the defaults of {cls_name}: {same}"


def test_ablation_weights_are_the_seed_scores_own_and_swapped():
    from ehrjudge.train.ablate_config import AblateConfig

    seed = ScoreConfig(definition="seed")
    assert (seed.w_maha, seed.w_knn) == (0.85, 0.15)
    assert AblateConfig().weights == ["0.85/0.15", "0.15/0.85"]


def test_the_built_in_cohort_size_and_seed_are_one_setting():
    # Setup
    import inspect

    from ehrjudge.cohort.build import build_cohort, default_cohort

    # Run
    run = RunConfig().cohort
    signatures = [inspect.signature(f).parameters for f in (default_cohort, build_cohort)]
    # Assert: the run, the cohort builder and its cache use the same 500 patients and seed 42
    assert (run.patients, run.seed) == (500, 42)
    assert all((p["patients"].default, p["seed"].default) == (500, 42) for p in signatures)
