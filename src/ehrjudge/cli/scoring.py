"""`ehrjudge score` (per-record realism score) and `ehrjudge evaluate` (dataset-level suite)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Optional

import typer

from ehrjudge.cli.app import CONFIG_COMMAND, app, read_records, settings_command
from ehrjudge.cli.engine_flags import CPUS_PER_WORKER, ENGINE, GPUS_PER_WORKER, RAY_ADDRESS, WORKERS

log = logging.getLogger(__name__)

FLOAT_FORMAT = "%.10g"  # fixed formatting: same inputs -> byte-identical CSV


def _load_cohorts(reference: Path, holdout: Optional[Path]):
    """(reference cohort, holdout cohort or None), the holdout checked to have the reference's columns."""
    from ehrjudge.cohort.schema import Cohort

    reference_cohort = Cohort.load(reference)
    if holdout is None:
        return reference_cohort, None
    holdout_cohort = Cohort.load(holdout)
    reference_cohort.schema.check_same(holdout_cohort.schema, file=holdout)
    return reference_cohort, holdout_cohort


@app.command("score", context_settings=CONFIG_COMMAND, cls=settings_command("ehrjudge.scoring.config:ScoreConfig"),
             help="Score every synthetic record against a real reference cohort: one CSV row per record with "
                  "record_id, each component of the score, the caps that bound it and why (caps, invalid_columns, "
                  "rule_violations), realism_score (1..10). --definition seed gives the original 0.85 Mahalanobis "
                  "+ 0.15 kNN score. Score columns already in the file (a judge dataset split) are ignored, with a "
                  "note.")
def score_command(
    ctx: typer.Context,
    reference: Path = typer.Option(..., "--reference", help="reference cohort dir (vectors.parquet, schema.json)"),
    synthetic: Path = typer.Option(..., "--synthetic", help="synthetic records (parquet/CSV with record_id)"),
    out: Path = typer.Option(..., "--out", help="output CSV; the resolved config goes beside it (.config.yaml)"),
    holdout: Optional[Path] = typer.Option(None, "--holdout", help="held-out real cohort for calibration"),
    config: Optional[Path] = typer.Option(None, "--config", help="YAML file of ScoreConfig settings"),
    engine: str = ENGINE,
    ray_address: Optional[str] = RAY_ADDRESS,
    workers: int = WORKERS,
    cpus_per_worker: float = CPUS_PER_WORKER,
    gpus_per_worker: float = GPUS_PER_WORKER,
) -> None:
    import numpy as np
    from rich.console import Console

    from ehrjudge.config import load_config, save_config
    from ehrjudge.engine import EngineConfig
    from ehrjudge.errors import about_file
    from ehrjudge.io import check_writable, write_csv
    from ehrjudge.scoring.realism import ScoreConfig, score_records

    score_config = load_config(ScoreConfig, config, ctx.args)
    engine_config = EngineConfig(engine, ray_address, workers, cpus_per_worker, gpus_per_worker)
    check_writable(out)
    reference_cohort, holdout_cohort = _load_cohorts(reference, holdout)
    records = read_records(synthetic, reference_cohort.schema)
    with about_file(reference):  # what is left unnamed is the reference's (e.g. too few records)
        scores = score_records(reference_cohort, records, score_config, holdout_cohort, records_file=synthetic,
                               engine=engine_config)
    write_csv(out, scores, float_format=FLOAT_FORMAT)
    save_config(score_config, out.with_suffix(".config.yaml"))
    counts = np.bincount(scores["realism_score"], minlength=11)[1:]
    console = Console()
    console.print(f"scored {len(scores)} records -> {out}")
    console.print("realism_score histogram (1..10): " + " ".join(str(c) for c in counts))
    console.print(f"mean realism_continuous {scores['realism_continuous'].mean():.3f}; "
                  f"near copies {int(scores['near_copy'].sum())}")
    if "caps" in scores:  # hardened: why records were capped, so a user sees what to fix
        reasons = scores["caps"][scores["caps"] != ""].str.split(";").explode().value_counts()
        console.print("capped: " + (", ".join(f"{name} {count}" for name, count in reasons.items()) or "none")
                      + f"; records breaking a clinical rule {int((scores['rule_violations'] != '').sum())}")


@app.command("probe", context_settings=CONFIG_COMMAND, cls=settings_command("ehrjudge.scoring.config:ScoreConfig"),
             help="Adversarial probes of the realism reward: exact and near copies of reference patients, the mean "
                  "patient, an all-zero record, every code present, one column at 10x the reference maximum, counts "
                  "x3; beside them the rounded mean patient, spliced patients, rule violators next to their clean "
                  "originals and real held-out patients (cross-fitted). Prints per probe the hardened and seed "
                  "scores, and the judge's with --judge. Writes probes.json, probes.md and probe_records.csv to "
                  "--out.")
def probe_command(
    ctx: typer.Context,
    reference: Path = typer.Option(..., "--reference", help="reference cohort dir (vectors.parquet, schema.json)"),
    holdout: Path = typer.Option(..., "--holdout", help="held-out real cohort (calibration and the real probes)"),
    out: Path = typer.Option(..., "--out", help="output directory (written atomically)"),
    judge: Optional[Path] = typer.Option(None, "--judge", help="trained judge folder (LoRA adapter) to probe too"),
    n: int = typer.Option(200, "--n", help="records per probe (at most the holdout's size)"),
    seed: int = typer.Option(0, "--seed", help="seed of the probes and the holdout halves"),
    config: Optional[Path] = typer.Option(None, "--config", help="YAML file of ScoreConfig settings"),
) -> None:
    from ehrjudge.config import load_config, save_config
    from ehrjudge.errors import about_file
    from ehrjudge.io import atomic_dir, check_writable, write_csv, write_json, write_text
    from ehrjudge.scoring.probes import check_probe_inputs, markdown_table, run_probes
    from ehrjudge.scoring.realism import ScoreConfig

    score_config = load_config(ScoreConfig, config, ctx.args)
    check_writable(out / "probes.json", "probe output folder")
    reference_cohort, holdout_cohort = _load_cohorts(reference, holdout)
    with about_file(holdout):  # checked before a judge is loaded
        check_probe_inputs(reference_cohort, holdout_cohort)
    scorer, cap = (_judge_scorer(judge, reference, holdout, reference_cohort.schema, score_config)
                   if judge is not None else (None, None))
    records, table = run_probes(reference_cohort, holdout_cohort, score_config, n, seed,
                                None if scorer is None else {"judge": scorer}, cap)
    markdown = markdown_table(table)
    with atomic_dir(out) as tmp:
        write_json(tmp / "probes.json", {"probes": table.to_dict(orient="records"), "n": n, "seed": seed,
                                         "judge": None if judge is None else str(judge)})
        write_text(tmp / "probes.md", markdown + "\n")
        write_csv(tmp / "probe_records.csv", records, float_format=FLOAT_FORMAT)
        save_config(score_config, tmp / "config.yaml")
    _console().print(markdown)
    _console().print(f"probes -> {out}")


def _judge_scorer(judge: Path, reference: Path, holdout: Path, schema, score_config):
    """(the trained judge in folder `judge` as a probe scorer (its saved prompt and calibration), the cap its cap
    line states per record, or None when it reads none)."""
    from ehrjudge.cli.judge import saved_with_judge, with_trained_prompt
    from ehrjudge.judge.calibration import saved_calibration
    from ehrjudge.judge.reference import reference_for
    from ehrjudge.judge.model import load_judge
    from ehrjudge.judge.scoring import JudgeConfig, matrix_caps, matrix_scorer

    judge_config = with_trained_prompt(JudgeConfig(adapter=str(judge)), None, {})
    model, tokenizer = load_judge(judge_config.model, judge_config.device, judge_config.dtype, judge_config.adapter,
                                  judge_config.precision)
    stats = reference_for(reference, judge_config.prompt.record_format, holdout, score_config)
    return (matrix_scorer(model, tokenizer, schema, judge_config.prompt, stats, judge_config.batch_size,
                          saved_with_judge(judge_config, saved_calibration)),
            matrix_caps(schema, judge_config.prompt, stats))


@app.command("evaluate", context_settings=CONFIG_COMMAND, cls=settings_command("ehrjudge.scoring.config:SuiteConfig"),
             help="Dataset-level evaluation of a synthetic record set against real data: distributions, "
                  "correlations, sparsity, clinical rules, privacy (membership / attribute inference) and TSTR "
                  "utility. Writes JSON and prints a table.")
def evaluate_command(
    ctx: typer.Context,
    reference: Path = typer.Option(..., "--reference", help="reference cohort directory"),
    synthetic: Path = typer.Option(..., "--synthetic", help="synthetic records (parquet/CSV)"),
    out: Path = typer.Option(..., "--out", help="output JSON report"),
    holdout: Optional[Path] = typer.Option(None, "--holdout", help="held-out real cohort (privacy and TSTR need it)"),
    config: Optional[Path] = typer.Option(None, "--config", help="YAML file of SuiteConfig settings"),
) -> None:
    from ehrjudge.config import load_config
    from ehrjudge.errors import about_file
    from ehrjudge.io import check_writable, write_json
    from ehrjudge.scoring.suite import SuiteConfig, evaluate

    suite_config = load_config(SuiteConfig, config, ctx.args)
    check_writable(out)
    reference_cohort, holdout_cohort = _load_cohorts(reference, holdout)
    records = read_records(synthetic, reference_cohort.schema)
    with about_file(reference):
        report = evaluate(reference_cohort, records, holdout_cohort, suite_config)
    write_json(out, report)
    _print_report(report)
    _console().print(f"report -> {out}")


def _format_value(value) -> str:
    import numpy as np

    if isinstance(value, bool) or value is None:
        return str(value)
    if isinstance(value, (int, np.integer)):
        return str(int(value))
    return f"{float(value):.4f}"


def _console():
    from rich.console import Console

    console = Console()
    return console if console.is_terminal else Console(width=200)  # pipes and files get full rows


def _print_report(report: dict) -> None:
    from rich.table import Table

    table = Table(title="synthetic data evaluation")
    for column in ("metric", "value", "goal", "range"):
        table.add_column(column, no_wrap=column == "metric")
    for row in report["metrics"]:
        value = _format_value(row["value"]) if row["value"] is not None else f"undefined: {row['reason']}"
        low, high = row["range"]
        bounds = f"[{'-inf' if low is None else _format_value(low)}, {'inf' if high is None else _format_value(high)}]"
        table.add_row(row["name"], value, row["goal"], bounds)
    _console().print(table)
