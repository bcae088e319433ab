"""`TuneConfig`: the settings of `ehrjudge tune-generator`, and its `quick` and `default` profiles.

Every budget is in steps and records, never in wall time, so a command trains the same generator on any machine.
"""

from __future__ import annotations

import dataclasses
from typing import Literal

from ehrjudge.config import option
from ehrjudge.errors import ConfigError

Reward = Literal["judge", "score", "formula", "none"]
REWARDS = ("judge", "score", "formula", "none")


@dataclasses.dataclass
class TuneConfig:
    """RL fine-tuning of a record generator (SmolLM2 + LoRA) against a realism reward."""

    reward: Reward = option("judge", "judge = the trained judge's expected score; score = the verifiable realism "
                                     "score (hardened definition); formula = the diagonal-z formula; none = the "
                                     "warm start alone (no RL)")
    model: str | None = option(None, "policy base model: None = the default SmolLM2-135M-Instruct, or a local dir")
    digits: int = option(3, "significant digits of continuous values in the record text")
    max_new_tokens: int = option(320, "tokens a completion may use; one cut off before its last line does not parse")
    temperature: float = option(1.0, "sampling temperature of the policy (training and evaluation)")
    lora_r: int = option(16, "LoRA rank of the warm start and of the RL adapter")
    lora_alpha: int = option(32, "LoRA scaling numerator (scale = alpha / r)")
    train_layers: int = option(8, "adapt only the top N decoder layers (0 = all): backward runs through N layers")
    # warm start: supervised fine-tuning on the reference records' text
    sft_steps: int = option(120, "warm-start optimizer steps (next-token loss on reference records' text)")
    sft_batch_size: int = option(8, "reference records per warm-start step")
    sft_learning_rate: float = option(1e-3, "AdamW learning rate of the warm start (constant after 10% warmup)")
    # RL: group-relative policy gradient
    rl_steps: int = option(16, "RL optimizer steps (0 with reward none)")
    group_size: int = option(16, "completions sampled per step (G); advantages are normalized within the group; "
                                  "a token step of batch 32 costs ~1.7x one of batch 8 (docs/generator.md)")
    rl_learning_rate: float = option(5e-4, "AdamW learning rate of the RL adapter")
    kl_coef: float = option(0.05, "beta of the per-token KL (k3 estimator) to the warm-start policy")
    max_grad_norm: float = option(1.0, "gradient clipping norm (0 = off)")
    parse_failure_reward: float = option(1.0, "reward of a completion that does not parse (the lowest label)")
    # evaluation
    eval_records: int = option(256, "records sampled from the final policy for the report (and the copula's)")
    eval_batch_size: int = option(32, "completions generated together at evaluation")
    judge_batch_size: int = option(8, "records per judge forward (reward judge)")
    checkpoint_every: int = option(10, "save the RL adapter, optimizer and history every N steps (resume point)")
    seed: int = option(0, "seed of sampling, data order and LoRA init")
    num_threads: int = option(0, "torch CPU threads (0 = torch's default)")
    tracking: str = option("tensorboard", "comma list of trackers (mlflow, tensorboard) or none; names are "
                                          "prefixed tune/")

    def __post_init__(self):
        if self.reward not in REWARDS:
            raise ConfigError(f"TuneConfig: reward must be one of {REWARDS}, got {self.reward!r}")
        for name in ("max_new_tokens", "sft_batch_size", "group_size", "eval_records", "eval_batch_size",
                     "judge_batch_size", "checkpoint_every", "lora_r"):
            if getattr(self, name) < 1:
                raise ConfigError(f"TuneConfig: {name} must be >= 1")
        if self.group_size < 2:
            raise ConfigError("TuneConfig: group_size must be >= 2 (advantages are normalized within a group)")
        if min(self.sft_steps, self.rl_steps, self.train_layers) < 0:
            raise ConfigError("TuneConfig: sft_steps, rl_steps and train_layers must be >= 0")
        if self.temperature <= 0:
            raise ConfigError("TuneConfig: temperature must be > 0")

    @property
    def steps(self) -> int:
        """RL steps this run takes: none trains nothing after the warm start."""
        return 0 if self.reward == "none" else self.rl_steps


# Partial TuneConfig mappings applied before the YAML file and flags (as ehrjudge run's profiles).
PROFILES: dict[str, dict] = {
    # docs/generator.md: what a step costs on 2 cores and why these budgets.
    "default": {},
    # The wiring in about a minute on the real model: a few steps, a few records.
    "quick": {"sft_steps": 6, "sft_batch_size": 4, "rl_steps": 2, "group_size": 4, "eval_records": 8,
              "eval_batch_size": 8, "checkpoint_every": 1},
}
