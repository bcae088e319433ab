"""`RunConfig`: every stage's settings in one typed tree, plus the `quick` and `default` profiles.

Precedence: dataclass defaults, then the profile, then `--config FILE.yaml`, then `--section.key value` flags.
"""

from __future__ import annotations

import dataclasses
from typing import Literal

from ehrjudge.cohort.config import DEFAULT_PATIENTS, DEFAULT_SEED, FeatureConfig
from ehrjudge.config import option, to_dict
from ehrjudge.errors import ConfigError
from ehrjudge.judge.config import BaselineConfig
from ehrjudge.scoring.config import ScoreConfig, SuiteConfig
from ehrjudge.synth.config import DatasetConfig
from ehrjudge.train.config import TrainConfig


@dataclasses.dataclass
class CohortSettings:
    source: Literal["clinosim", "mimic", "fhir"] = option("clinosim", "real cohort source")
    path: str | None = option(None, "folder of a MIMIC-IV or FHIR export (clinosim: simulated when None)")
    patients: int | None = option(DEFAULT_PATIENTS, "patients with records (clinosim) or a cap on loaded patients")
    seed: int = option(DEFAULT_SEED, "simulator seed")
    features: FeatureConfig = option(FeatureConfig(), "which codes become columns")


@dataclasses.dataclass
class RunConfig:
    cohort: CohortSettings = option(CohortSettings(), "reference cohort -> patient vectors")
    score: ScoreConfig = option(ScoreConfig(), "the realism score of the whole run: it labels the dataset's "
                                               "records and scores the suite and the probes (dataset.score and "
                                               "suite.score belong to the stand-alone commands; a run refuses them)")
    dataset: DatasetConfig = option(DatasetConfig(), "synthetic generators and the judge's splits")
    suite: SuiteConfig = option(SuiteConfig(), "dataset-level evaluation suite, run per generator")
    suite_records: int = option(200, "at most this many test records per generator in the suite")
    baseline: BaselineConfig = option(BaselineConfig(), "zero-shot judge and regressor (split is set per stage)")
    train: TrainConfig = option(TrainConfig(), "RLVR training of the judge (dataset/output_dir are set by the run)")
    probe_records: int = option(40, "records per adversarial probe scored by the trained judge (probes stage)")
    eval_batch_size: int = option(16, "batch size of the trained judge on test and test_unseen")
    tracking: Literal["mlflow", "none"] = option("mlflow", "log the run's config, metrics and artifacts to MLflow")
    tracking_uri: str | None = option(None, "MLflow URI (default $MLFLOW_TRACKING_URI or sqlite in the run folder)")
    experiment: str = option("ehrjudge-run", "MLflow experiment name")

    def __post_init__(self):
        # One realism score for the run, so the labels the judge learns and the suite's scores cannot disagree.
        for name in SCORED_SECTIONS:
            if getattr(self, name).score != ScoreConfig():
                raise ConfigError(f"{name}.score: a run has one realism score; set it under `score:` "
                                  f"(--score.KEY value), which {' and '.join(SCORED_SECTIONS)} use")

    def dataset_config(self) -> DatasetConfig:
        """The dataset stage's settings, labelling records with the run's realism score."""
        return dataclasses.replace(self.dataset, score=self.score)

    def suite_config(self) -> SuiteConfig:
        """The suite stage's settings, scoring with the run's realism score."""
        return dataclasses.replace(self.suite, score=self.score)


SCORED_SECTIONS = ("dataset", "suite")  # stand-alone configs with a ScoreConfig of their own, unused in a run


def run_settings(cfg: RunConfig) -> dict:
    """The run config as saved and logged: `score` once, not the unused copies under dataset and suite."""
    settings = to_dict(cfg)
    for name in SCORED_SECTIONS:
        del settings[name]["score"]
    return settings


# Profiles are partial RunConfig mappings applied before the YAML file and flags.
PROFILES: dict[str, dict] = {
    # TrainConfig's defaults (the measured best, docs/training.md), with a budget in steps: 256 steps of 8 (two
    # epochs of the 1,024-record subset), chosen so that the whole run fits 45 minutes on 2 AVX2 cores with the
    # slowest stage times measured so far (docs/training.md, 'Step budget'); no wall cap, so the same command trains
    # the same judge on every machine. Every stage's own defaults are the default profile, so it overrides nothing.
    "default": {},
    # <= 5 minutes on 2 cores: a small cohort and dataset, 32 zero-shot records over test + test_unseen, short
    # prompts, 8 training steps. What CI runs end to end; its figures show the wiring, not the judge's quality.
    "quick": {
        "cohort": {"patients": 120},
        "dataset": {"size": 360, "strengths": [0.0, 0.35, 1.0], "pool_factor": 2.0, "top_up_rounds": 1},
        "suite_records": 60,
        "probe_records": 8,
        "suite": {"per_feature": False},
        "baseline": {"n_bootstrap": 200, "limit": 32},
        "train": {"max_steps": 8, "batch_size": 4, "val_records": 16, "eval_every": 4, "checkpoint_every": 4,
                  "log_every": 2, "warmup_steps": 2, "prompt": {"max_record_tokens": 96}},
    },
}
