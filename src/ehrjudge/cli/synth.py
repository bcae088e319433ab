"""`ehrjudge synth` (one generator's records) and `ehrjudge dataset` (the judge's scored splits)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from ehrjudge.cli.app import CONFIG_COMMAND, app, settings_command


@app.command("synth")
def synth_command(
    reference: Path = typer.Option(..., "--reference", help="real reference cohort directory"),
    generator: str = typer.Option(..., "--generator", help="generator family (see ehrjudge.synth.generators)"),
    n: int = typer.Option(..., "--n", help="number of records"),
    out: Path = typer.Option(..., "--out", help="output parquet (record_id, generator, strength, features)"),
    strength: float = typer.Option(0.0, "--strength", help="0 = most realistic .. 1 = most broken"),
    seed: int = typer.Option(0, "--seed", help="random seed"),
    holdout: Optional[Path] = typer.Option(None, "--holdout", help="held-out real cohort (holdout_real needs it)"),
) -> None:
    """Write `n` synthetic records of one generator family at one strength."""
    from rich.console import Console

    from ehrjudge.cohort.schema import Cohort
    from ehrjudge.errors import InputError
    from ehrjudge.io import write_parquet
    from ehrjudge.synth.generators import GENERATORS, generate

    if generator not in GENERATORS:
        raise InputError(f"unknown generator {generator!r}; choose one of {', '.join(GENERATORS)}")
    reference_cohort = Cohort.load(reference)
    holdout_cohort = Cohort.load(holdout) if holdout is not None else None
    records = generate(generator, reference_cohort, n, strength, seed, holdout=holdout_cohort)
    write_parquet(out, records)
    Console().print(f"{len(records)} {generator} records (strength {strength:g}, seed {seed}) -> {out}")


@app.command("dataset", context_settings=CONFIG_COMMAND, cls=settings_command("ehrjudge.synth.config:DatasetConfig"),
             help="Build the judge dataset: generate a scored candidate pool over every family x strength, balance "
                  "it by realism_score and write train/val/test/test_unseen parquet files, reference/ and "
                  "dataset.json.")
def dataset_command(
    ctx: typer.Context,
    reference: Path = typer.Option(..., "--reference", help="real cohort directory (split into reference + holdout)"),
    out: Path = typer.Option(..., "--out", help="output dataset directory (replaced atomically)"),
    size: Optional[int] = typer.Option(None, "--size", help="records over all four splits"),
    seed: Optional[int] = typer.Option(None, "--seed", help="random seed"),
    config: Optional[Path] = typer.Option(None, "--config", help="YAML file of DatasetConfig settings"),
) -> None:
    import json

    from rich.console import Console
    from rich.table import Table

    from ehrjudge.config import load_config
    from ehrjudge.synth.config import SPLITS
    from ehrjudge.synth.dataset import SCORES, DatasetConfig, build_dataset

    flags = list(ctx.args)
    if size is not None:
        flags += ["--size", str(size)]
    if seed is not None:
        flags += ["--seed", str(seed)]
    dataset_config = load_config(DatasetConfig, config, flags)
    path = build_dataset(reference, out, dataset_config)
    summary = json.loads((path / "dataset.json").read_text())
    table = Table(title=f"realism_score histogram per split ({path})")
    table.add_column("split")
    table.add_column("n", justify="right")
    for score in SCORES:
        table.add_column(str(score), justify="right")
    for name in SPLITS:
        split = summary["splits"][name]
        n = max(split["n"], 1)
        table.add_row(name, str(split["n"]), *(f"{100 * split['histogram'][str(s)] / n:.0f}%" for s in SCORES))
    console = Console(width=max(Console().width, 110))  # 12 columns: keep split names readable
    console.print(table)
    if not summary["min_bin_fraction_met"]:
        console.print(f"[yellow]warning:[/] some score bin holds {100 * summary['train_min_bin_fraction']:.1f}% of "
                      f"train, below --min-bin-fraction {100 * dataset_config.min_bin_fraction:.0f}%")
