"""Settings of the preference methods beside the RLVR judge: Bradley-Terry reward model, DPO, pairwise judge, and
the comparison of every method (`ehrjudge compare`).

Kept apart from the trainers so `ehrjudge compare --help` reads it without importing torch or pandas. Each method
nests a TrainConfig as `base` for what it shares with the RLVR trainers (base model, dataset, LoRA, optimizer, step
budget, prompt, tracking); the RLVR-only fields of `base` (method, reward, advantage, grpo_*) are not read, and
`base.kl_coef` only by DPO (an extra exact KL term, 0 by default: beta already ties DPO to its reference).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from ehrjudge.config import option
from ehrjudge.errors import ConfigError
from ehrjudge.judge.prompt import PAIRWISE_INSTRUCTION, PAIRWISE_SUFFIX
from ehrjudge.train.config import TrainConfig

PREFERENCE_METHODS = ("bradley_terry", "dpo", "pairwise", "pairwise_consistent")


def _base() -> TrainConfig:
    # The RLVR defaults (same budget, LoRA and prompt, so the comparison is at equal cost); no KL by default.
    return TrainConfig(**NO_KL)


# A pair prompt (~330 tokens) runs the whole model every step (no lower-layer cache: each pair is new), estimated
# ~1.5 s per prompt forward+backward on 2 cores (the ~0.65 s frozen pass of a ~182-token record, docs/training.md):
# 128 steps of 4 pairs ~ 13 min, twice that with swap_consistency (both orders). An estimate, not a measurement.
PAIRWISE_BUDGET = {"batch_size": 4, "max_steps": 128, "eval_every": 64}
NO_KL = {"kl_coef": 0.0}  # the preference methods' one change to the RLVR settings they share


def _pairwise_base() -> TrainConfig:
    return TrainConfig(**NO_KL, **PAIRWISE_BUDGET)


@dataclasses.dataclass
class BradleyTerryConfig:
    """Bradley-Terry reward model: the judge's base model with LoRA and a linear head on the last token."""

    output_dir: str = option("runs/bradley_terry", "run directory: config.yaml, metrics.jsonl, final/ (adapter, "
                                                   "head.pt, calibration.json), summary.json")
    base: TrainConfig = option(_base(), "model, dataset, LoRA, optimizer and budget (TrainConfig); batch_size = "
                                         "pairs per optimizer step")
    margin: int = option(2, "a training pair's verifiable scores differ by at least this much (the more realistic "
                            "record is chosen); 1 = every pair with distinct scores")


@dataclasses.dataclass
class DPOConfig:
    """DPO on the judge's answers: the label at the verifiable score preferred to a label farther from it."""

    output_dir: str = option("runs/dpo", "run directory, laid out as an `ehrjudge train` run (best/, final/ are judge "
                                         "folders)")
    base: TrainConfig = option(_base(), "model, dataset, LoRA, optimizer and budget (TrainConfig); batch_size = "
                                         "records (one pair each) per micro-batch")
    beta: float = option(0.1, "DPO's beta (TRL's default 0.1): the inverse temperature of the implicit reward "
                              "beta * log(pi/pi_ref); larger keeps the judge nearer its reference")
    margin: int = option(2, "the rejected label is drawn uniformly from labels at least this far from the verifiable "
                            "score (the chosen label is the score itself)")


@dataclasses.dataclass
class PairwiseConfig:
    """The pairwise judge: two records in one prompt, answer 'A' or 'B' (which is more realistic)."""

    output_dir: str = option("runs/pairwise", "run directory: config.yaml, metrics.jsonl, final/ (adapter), "
                                              "summary.json")
    base: TrainConfig = option(_pairwise_base(), "model, dataset, LoRA, optimizer, budget and record text "
                                                  "(TrainConfig; prompt.instruction and prompt.suffix are replaced "
                                                  "by the two below); batch_size = pairs per optimizer step")
    instruction: str = option(PAIRWISE_INSTRUCTION, "the task instruction placed before the two records")
    suffix: str = option(PAIRWISE_SUFFIX, "text after the records, right before the assistant turn")
    margin: int = option(2, "a pair's verifiable scores differ by at least this much (training and evaluation)")
    swap_consistency: bool = option(False, "train on both orders of each pair with the J1 / JudgeLM consistency "
                                           "reward: 1 only when the verdict is right in both orders, exactly "
                                           "p_AB(right) * p_BA(right); off = each pair in one random order, reward "
                                           "p(right)")
    agreement_weight: float = option(0.0, "with swap_consistency: lambda of the agreement term, lambda * P(the same "
                                          "record chosen in both orders), added to J1's reward (0 = J1 alone; "
                                          "train/pairwise.py)")
    eval_pairs: int = option(64, "val pairs judged (in both orders) before training, every base.eval_every steps "
                                 "and at the end (0 = every pair)")

    def __post_init__(self):
        if self.agreement_weight < 0:
            raise ConfigError(f"PairwiseConfig.agreement_weight must be >= 0 (got {self.agreement_weight}): a negative "
                              "weight rewards the position bias")


@dataclasses.dataclass
class CompareConfig:
    """One table over the judge-building methods on the same held-out records and pairs."""

    output_dir: str = option("runs/compare", "where the table (compare.{md,csv,json}) and methods trained here go")
    run: str | None = option(None, "an `ehrjudge run` folder: its dataset/ and judge/ (RLVR), and bradley_terry/, "
                                   "dpo/, pairwise/ when present")
    dataset: str | None = option(None, "judge dataset dir (default: RUN/dataset, else the default dataset)")
    judge: str | None = option(None, "RLVR judge folder or training run dir (default: RUN/judge when present)")
    bradley_terry_dir: str | None = option(None, "trained Bradley-Terry folder or run dir (default: RUN/bradley_terry)")
    dpo_dir: str | None = option(None, "trained DPO judge folder or run dir (default: RUN/dpo)")
    pairwise_dir: str | None = option(None, "trained pairwise judge folder or run dir (default: RUN/pairwise)")
    pairwise_consistent_dir: str | None = option(None, "a second pairwise judge, trained with swap_consistency "
                                                       "(default: RUN/pairwise_consistent): its conflict rate after "
                                                       "the consistency reward, beside the first's")
    train: list[str] = option([], "preference methods to train in this command, into OUT/<method> (any of "
                                  "bradley_terry, dpo, pairwise, pairwise_consistent), with the settings below, on "
                                  "this dataset; pairwise_consistent = the pairwise settings with swap_consistency "
                                  "on")
    bradley_terry: BradleyTerryConfig = option(BradleyTerryConfig(), "Bradley-Terry settings when trained here")
    dpo: DPOConfig = option(DPOConfig(), "DPO settings when trained here")
    pairwise: PairwiseConfig = option(PairwiseConfig(), "pairwise judge settings when trained here")
    splits: list[str] = option(["test", "test_unseen"], "dataset splits evaluated")
    limit: int = option(0, "evaluate a seeded subset of at most N records per split (0 = all)")
    pair_margin: int = option(1, "evaluation pairs: records of one split whose verifiable scores differ by at least "
                                 "this much (every method's pairwise accuracy is measured on the same pairs)")
    eval_pairs: int = option(128, "evaluation pairs drawn per split, 0 = every pair (the pairwise judge reads each "
                                  "in both orders: ~1.2 s a prompt for SmolLM2-135M on 2 cores, estimated)")
    batch_size: int = option(8, "records (or pairs) per forward pass when scoring")
    n_bootstrap: int = option(1000, "bootstrap resamples of the 95% intervals")
    seed: int = option(0, "seed of record subsets, evaluation pairs and bootstrap")

    def __post_init__(self):
        unknown = [name for name in self.train if name not in PREFERENCE_METHODS]
        if unknown:
            raise ConfigError(f"CompareConfig: unknown method(s) to train {unknown}; choose from "
                              f"{list(PREFERENCE_METHODS)}")


def run_defaults(run: str | Path) -> dict:
    """CompareConfig settings that make the methods trained here share the run's RLVR settings (its config.yaml
    `train:` section: model, LoRA, optimizer, budget, prompt), KL off and the pairwise budget aside; applied after
    the dataclass defaults and before the YAML and flags. {} when the run records no train settings."""
    import yaml

    path = Path(run) / "config.yaml"
    if not path.is_file():
        return {}
    train = (yaml.safe_load(path.read_text()) or {}).get("train")
    if not isinstance(train, dict):
        return {}
    shared = {key: value for key, value in train.items() if key not in ("dataset", "output_dir", "method")}
    return {"bradley_terry": {"base": {**shared, **NO_KL}}, "dpo": {"base": {**shared, **NO_KL}},
            "pairwise": {"base": {**shared, **NO_KL, **PAIRWISE_BUDGET}}}
