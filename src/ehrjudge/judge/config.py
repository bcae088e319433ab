"""The settings of judging (`JudgeConfig`) and of the zero-shot baseline report (`BaselineConfig`).

Kept apart from scoring.py and baseline.py so `--help` and the run config read them without importing torch.
"""

from __future__ import annotations

import dataclasses
from typing import Literal

from ehrjudge.config import option
from ehrjudge.judge.prompt import PromptConfig


@dataclasses.dataclass
class JudgeConfig:
    """Which judge runs, where, and with which prompt."""

    model: str | None = option(None, "local HF checkpoint dir, hub id, or ehrjudge checkpoint; None = SmolLM2-135M")
    adapter: str | None = option(None, "LoRA adapter directory (peft) applied on top of the model")
    device: str = option("auto", "auto (cuda if available, else cpu), cpu, cuda, cuda:1, ...")
    dtype: str = option("auto", "auto (bf16 on cuda, fp32 on cpu), float32, bfloat16, float16")
    # float32 by default: bf16-frozen-mlp kept the deviations judge within the drift limit (0.045) but moves the
    # findings judge, the training default since 2026-12-07, by up to 0.074 (docs/judge.md, "Speed").
    precision: str = option("float32", "float32, auto (bf16 MLP matmuls in a LoRA judge's frozen layers on CPUs with "
                                       "native bf16, else fp32), bf16-frozen-mlp, bf16-frozen; see judge/precision.py")
    batch_size: int = option(8, "records per forward pass")
    reuse_prefix: bool = option(True, "compute the prompt prefix shared by all records (system + instruction) once")
    prompt: PromptConfig = option(PromptConfig(), "prompt layout")


@dataclasses.dataclass
class BaselineConfig:
    """Zero-shot agreement report settings."""

    split: str = option("test", "split(s) to evaluate: train, val, test, test_unseen, or several joined by '+'")
    limit: int | None = option(None, "evaluate a seeded random subset of at most this many records; None = all")
    seed: int = option(0, "seed for the subset and the bootstrap intervals")
    n_bootstrap: int = option(1000, "bootstrap resamples for the correlation intervals")
    regressor: Literal["hist_gradient_boosting", "ridge"] = option(
        "hist_gradient_boosting", "reference regressor on the patient vectors, trained on the train split")
    n_disagreements: int = option(5, "largest judge/verifiable disagreements listed with their record text")
    judge: JudgeConfig = option(JudgeConfig(), "the judge")
