"""`ehrjudge run`, `ehrjudge report`, `ehrjudge gate`, `ehrjudge register-judge`."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from ehrjudge.cli.app import CONFIG_COMMAND, app, one_of, settings_command


@app.command("report")
def report_command(
    out: Optional[Path] = typer.Option(None, "--out", help="run folder written by `ehrjudge run --out`"),
    run: Optional[Path] = typer.Option(None, "--run", hidden=True, help="old spelling of --out"),
    check: bool = typer.Option(False, help="render in headless Chromium and verify the key elements"),
    screenshot: Optional[Path] = typer.Option(None, help="also save a PNG screenshot here"),
):
    """(Re)build OUT/report.html from a run folder."""
    from ehrjudge.pipeline.report import write_report

    run = one_of(out, run, "--out", "--run")
    if run is None:
        raise typer.BadParameter("--out RUN_FOLDER is required", param_hint="--out")
    path = write_report(run)
    typer.echo(f"wrote {path}")
    if check:
        from ehrjudge.pipeline.browser_check import inspect_report

        seen = inspect_report(path)
        typer.echo(f"rendered: {len(seen['headings'])} headings, {seen['tables']} tables, {len(seen['images'])} images")
    if screenshot:
        from ehrjudge.pipeline.browser_check import screenshot as take

        typer.echo(f"screenshot {take(path, screenshot)}")


@app.command("gate", context_settings=CONFIG_COMMAND, cls=settings_command("ehrjudge.pipeline.gate:GateConfig"))
def gate_command(
    ctx: typer.Context,
    judge: Path = typer.Option(..., "--judge", help="trained judge checkpoint folder"),
    synthetic: Optional[Path] = typer.Option(None, "--synthetic", help="the generator's records (parquet)"),
    generator: Optional[Path] = typer.Option(None, "--generator", help="a tuned generator folder (tune-generator's "
                                             "generator/): sampled, judged, and registered itself if it passes"),
    name: str = typer.Option(..., "--name", help="registered model name for the generator"),
    threshold: Optional[float] = typer.Option(None, help="minimum mean judge score (the `threshold` setting "
                                                          "below)"),
    reference: Optional[Path] = typer.Option(None, help="reference cohort for the near-copy check"),
    config: Optional[Path] = typer.Option(None, "--config", help="YAML with GateConfig settings"),
):
    """Score a generator's output (a record set, or records sampled from a tuned generator checkpoint) with the
    trained judge; register it in MLflow only if it passes."""
    from ehrjudge.config import load_config
    from ehrjudge.pipeline.gate import GateConfig, run_gate

    flags = list(ctx.args)
    if threshold is not None:
        flags += ["--threshold", str(threshold)]
    if reference is not None:
        flags += ["--reference", str(reference)]
    cfg = load_config(GateConfig, config, flags)
    decision = run_gate(str(judge), synthetic and str(synthetic), name, cfg, generator and str(generator))
    if generator is not None:
        typer.echo(f"parse-failure rate {decision.parse_failure_rate:.3f} (limit {cfg.max_parse_failure_rate:.3f})")
    typer.echo(f"mean judge score {decision.mean_judge_score:.2f} ({decision.score}; threshold {cfg.threshold:.2f}); "
               f"near-copy rate {decision.near_copy_rate:.3f} (limit {cfg.max_near_copy_rate:.3f}); "
               f"{decision.n_records} records")
    if decision.accepted:
        typer.echo(f"ACCEPTED: registered {name} version {decision.version}")
        return
    typer.echo("REFUSED: " + "; ".join(decision.reasons))
    raise typer.Exit(code=1)


@app.command("register-judge", context_settings=CONFIG_COMMAND,
             cls=settings_command("ehrjudge.pipeline.registry:RegistryConfig"))
def register_judge_command(
    ctx: typer.Context,
    judge: Path = typer.Option(..., "--judge", help="self-contained trained judge folder (a run's train/judge, "
                                                    "or ehrjudge train's best/ or final/)"),
    name: str = typer.Option(..., "--name", help="registered model name for the judge"),
    config: Optional[Path] = typer.Option(None, "--config", help="YAML with RegistryConfig settings"),
):
    """Register a trained judge folder as a new version of MLflow model NAME: a pyfunc that takes record rows and
    returns their scores (`mlflow models serve -m models:/NAME/VERSION`), with the judge's base model, validation
    and held-out agreement logged on its run. Not gated: registering a judge is the user's decision."""
    from ehrjudge.config import load_config
    from ehrjudge.pipeline.gate import register_judge
    from ehrjudge.pipeline.registry import RegistryConfig

    cfg = load_config(RegistryConfig, config, list(ctx.args))
    version = register_judge(judge, name, cfg)
    typer.echo(f"registered {name} version {version} (experiment {cfg.experiment}): models:/{name}/{version}")


@app.command("run", context_settings=CONFIG_COMMAND, cls=settings_command("ehrjudge.pipeline.config:RunConfig"))
def run_command(
    ctx: typer.Context,
    out: Path = typer.Option(Path("runs/default"), "--out", help="run folder"),
    profile: str = typer.Option("default", help="settings profile: quick (<= 5 min) or default"),
    config: Optional[Path] = typer.Option(None, "--config", help="YAML with RunConfig settings"),
    force: list[str] = typer.Option([], help="re-run this stage even if cached (repeatable)"),
    until: Optional[str] = typer.Option(None, help="stop after this stage"),
):
    """Run every stage on the built-in default (or the config's cohort): cached stages are skipped.

    Stages: cohort, dataset, suite, zero_shot, train, evaluation, probes; then summary.json and report.html.
    Any setting is a flag: --train.learning-rate 1e-4, --cohort.patients 300, --score.k 3, ... (the defaults
    listed are the default profile's; --profile quick overrides some).
    """
    from ehrjudge.config import load_config
    from ehrjudge.errors import ConfigError
    from ehrjudge.pipeline.config import PROFILES, RunConfig
    from ehrjudge.pipeline.run import run_pipeline

    if profile not in PROFILES:
        raise ConfigError(f"unknown profile {profile!r}; choose from {list(PROFILES)}")
    cfg = load_config(RunConfig, config, list(ctx.args), base=PROFILES[profile])
    summary = run_pipeline(cfg, out, set(force), until)
    for record in summary.get("stages", []):
        state = "cached" if record["skipped"] else f"{record['seconds']:.1f} s"
        typer.echo(f"  {record['name']:<11} {state}")
    if "splits" not in summary:
        return
    typer.echo(f"\n{'split':<12} {'scorer':<18} pearson spearman     MAE within1    mean     std")
    for split, scorers in summary["splits"].items():
        for scorer, m in scorers.items():
            def fmt(v):
                return f"{v:7.3f}" if isinstance(v, (int, float)) else "    n/a"
            typer.echo(f"{split:<12} {scorer:<18} {fmt(m['pearson'])} {fmt(m['spearman'])} {fmt(m['mae'])} "
                       f"{fmt(m['within_1'])} {fmt(m['mean'])} {fmt(m['std'])}")
    typer.echo(f"\nreport: {out / 'report.html'}\nsummary: {out / 'summary.json'}")
