"""`ehrjudge tune-generator`: RL-train a record generator against the judge, the verifiable score or the formula."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from ehrjudge.cli.app import CONFIG_COMMAND, app, settings_command


@app.command("tune-generator", context_settings=CONFIG_COMMAND,
             cls=settings_command("ehrjudge.generator.config:TuneConfig"))
def tune_generator_command(
    ctx: typer.Context,
    out: Path = typer.Option(..., "--out", help="run folder (resumed when it holds a checkpoint)"),
    reference: Optional[Path] = typer.Option(None, "--reference", help="reference cohort folder (a judge dataset's "
                                                                       "reference/: its holdout/ is found beside "
                                                                       "it); default: the one --judge records"),
    reward: Optional[str] = typer.Option(None, "--reward", help="judge, score, formula or none"),
    judge: Optional[Path] = typer.Option(None, "--judge", help="trained judge folder (reward judge; with any "
                                                               "other reward its score is reported too)"),
    holdout: Optional[Path] = typer.Option(None, "--holdout", help="held-out real cohort (default: beside "
                                                                   "--reference)"),
    profile: str = typer.Option("default", help="settings profile: quick or default"),
    config: Optional[Path] = typer.Option(None, "--config", help="YAML with TuneConfig settings"),
) -> None:
    """Warm-start a SmolLM2 + LoRA record writer on the reference's text, RL-train it against a reward, and
    measure it (verifiable score, suite, hacking gap) beside the Gaussian copula: OUT/summary.json, report.html."""
    from ehrjudge.cli.judge import reference_or_recorded
    from ehrjudge.config import load_config
    from ehrjudge.errors import ConfigError
    from ehrjudge.generator.config import PROFILES, TuneConfig
    from ehrjudge.generator.report import evaluation_table
    from ehrjudge.generator.tune import tune_generator

    if profile not in PROFILES:
        raise ConfigError(f"unknown profile {profile!r}; choose from {list(PROFILES)}")
    flags = list(ctx.args) + (["--reward", reward] if reward is not None else [])
    cfg = load_config(TuneConfig, config, flags, base=PROFILES[profile])
    reference = reference_or_recorded(reference, judge)
    summary = tune_generator(reference, out, cfg, holdout, judge)
    table = evaluation_table(summary)
    typer.echo(table.to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    typer.echo(f"\nreport: {out / 'report.html'}\nsummary: {out / 'summary.json'}")
