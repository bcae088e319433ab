"""A finished training run's best/ and final/ made self-contained judge folders (judge/artifact.py)."""

from __future__ import annotations

from pathlib import Path

from ehrjudge.judge.artifact import package_judge
from ehrjudge.train.config import TrainConfig

RUN_SETTINGS = ("method", "learning_rate", "kl_coef", "lora_r", "train_layers", "batch_size", "seed", "reward",
                "reward_after_caps")


def package_run(run_dir: Path, config: TrainConfig, dataset_dir: Path, summary: dict) -> None:
    """package_judge on best/ and final/, each with what the run did and which step it holds."""
    for name, step in (("best", summary["best_step"]), ("final", summary["steps"])):
        folder = Path(run_dir) / name
        if folder.is_dir():
            training = {**{key: getattr(config, key) for key in RUN_SETTINGS}, "method": summary["method"],
                        **{key: summary[key] for key in ("steps", "budget_steps", "stopped_by", "best_step")},
                        "checkpoint": f"{name} (step {step})"}
            package_judge(folder, config.model, dataset_dir, config.prompt, training)
