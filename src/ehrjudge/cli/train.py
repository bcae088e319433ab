"""`ehrjudge train` (RLVR training of the judge), `ehrjudge evaluate-judge`, `ehrjudge ablate`."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console

from ehrjudge.cli.app import CONFIG_COMMAND, app
from ehrjudge.config import describe, load_config

log = logging.getLogger(__name__)


def _train_help() -> str:
    from ehrjudge.train.config import TrainConfig

    return ("Train the judge with RL from the verifiable realism score (methods: expected, reinforce, grpo). "
            "Settings come from the dataclass defaults, then --config YAML, then --key value flags; unknown keys "
            "fail. The resolved config is saved as OUTPUT_DIR/config.yaml.\n\nSettings:\n\n"
            + describe(TrainConfig).replace("\n", "\n\n"))


@app.command("train", context_settings=CONFIG_COMMAND, help=_train_help())
def train_command(
    ctx: typer.Context,
    config: Optional[Path] = typer.Option(None, "--config", help="YAML file of TrainConfig settings"),
    resume: bool = typer.Option(False, "--resume", help="continue from OUTPUT_DIR's latest checkpoint"),
) -> None:
    from ehrjudge.train.config import TrainConfig
    from ehrjudge.train.loop import train

    flags = list(ctx.args)
    if "--debug" in flags:
        logging.getLogger("ehrjudge").setLevel(logging.DEBUG)
    train_config = load_config(TrainConfig, config, flags)
    summary = train(train_config, resume=resume)
    console = Console()
    validation = summary["final_validation"]
    console.print(f"trained {summary['method']} for {summary['steps']} steps ({summary['stopped_by']}) in "
                  f"{summary['train_seconds'] / 60:.1f} min, {summary['seconds_per_step_median']:.2f} s/step")
    console.print(f"validation: Spearman {validation['spearman']:.3f}, Pearson {validation['pearson']:.3f}, "
                  f"MAE {validation['mae']:.3f}; best Spearman {summary['best_val_spearman']:.3f} at step "
                  f"{summary['best_step']}")
    console.print(f"best checkpoint: {Path(summary['run_dir']) / 'best'}")
