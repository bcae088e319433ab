"""`ehrjudge run`, `ehrjudge report`, `ehrjudge gate`."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from ehrjudge.cli.app import CONFIG_COMMAND, app


@app.command("report")
def report_command(
    run: Path = typer.Option(..., "--run", help="run folder written by `ehrjudge run`"),
    check: bool = typer.Option(False, help="render in headless Chromium and verify the key elements"),
    screenshot: Optional[Path] = typer.Option(None, help="also save a PNG screenshot here"),
):
    """(Re)build RUN/report.html from a run folder."""
    from ehrjudge.pipeline.report import write_report

    path = write_report(run)
    typer.echo(f"wrote {path}")
    if check:
        from ehrjudge.pipeline.browser_check import inspect_report

        seen = inspect_report(path)
        typer.echo(f"rendered: {len(seen['headings'])} headings, {seen['tables']} tables, {len(seen['images'])} images")
    if screenshot:
        from ehrjudge.pipeline.browser_check import screenshot as take

        typer.echo(f"screenshot {take(path, screenshot)}")


@app.command("gate", context_settings=CONFIG_COMMAND)
def gate_command(
    ctx: typer.Context,
    judge: Path = typer.Option(..., "--judge", help="trained judge checkpoint folder"),
    synthetic: Path = typer.Option(..., "--synthetic", help="the generator's records (parquet)"),
    name: str = typer.Option(..., "--name", help="registered model name for the generator"),
    threshold: Optional[float] = typer.Option(None, help="minimum mean judge score (default 6.0)"),
    reference: Optional[Path] = typer.Option(None, help="reference cohort for the near-copy check"),
    config: Optional[Path] = typer.Option(None, "--config", help="YAML with GateConfig settings"),
):
    """Score a generator's output with the trained judge; register it in MLflow only if it passes.

    Extra settings: --max-near-copy-rate, --tracking-uri, --registry-dir, --batch-size.
    """
    from ehrjudge.config import load_config
    from ehrjudge.pipeline.gate import GateConfig, run_gate

    flags = list(ctx.args)
    if threshold is not None:
        flags += ["--threshold", str(threshold)]
    if reference is not None:
        flags += ["--reference", str(reference)]
    cfg = load_config(GateConfig, config, flags)
    decision = run_gate(str(judge), str(synthetic), name, cfg)
    typer.echo(f"mean judge score {decision.mean_judge_score:.2f} (threshold {cfg.threshold:.2f}); "
               f"near-copy rate {decision.near_copy_rate:.3f} (limit {cfg.max_near_copy_rate:.3f}); "
               f"{decision.n_records} records")
    if decision.accepted:
        typer.echo(f"ACCEPTED: registered {name} version {decision.version}")
        return
    typer.echo("REFUSED: " + "; ".join(decision.reasons))
    raise typer.Exit(code=1)
