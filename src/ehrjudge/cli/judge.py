"""`ehrjudge judge` (score records with the LLM judge) and `ehrjudge baseline` (zero-shot agreement report)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from ehrjudge.cli.app import CONFIG_COMMAND, app, one_of, read_records, settings_command
from ehrjudge.errors import InputError
from ehrjudge.cli.engine_flags import CPUS_PER_WORKER, ENGINE, GPUS_PER_WORKER, RAY_ADDRESS, WORKERS

FLOAT_FORMAT = "%.10g"


def _overrides(ctx_args: list[str], **explicit) -> dict:
    from ehrjudge.config import parse_flags

    flags = parse_flags(ctx_args)
    for key, value in explicit.items():
        if value is not None:
            flags[key] = value
    return flags


def with_trained_prompt(judge_config, config_file: Optional[Path], overrides: dict):
    """A trained judge reads the prompt it was trained with, unless the YAML or a flag sets the prompt."""
    import dataclasses

    import yaml

    from ehrjudge.errors import InputError
    from ehrjudge.judge.prompt import saved_prompt

    from_file = (yaml.safe_load(Path(config_file).read_text()) or {}) if config_file else {}
    if "prompt" in overrides or "prompt" in from_file:
        return judge_config
    trained = saved_with_judge(judge_config, saved_prompt)
    unprompted = saved_with_judge(judge_config, _trained_folder) if trained is None else None
    if unprompted is not None:  # no silent default prompt for a judge trained on another one
        raise InputError("the trained judge folder records no prompt (ehrjudge.json or the training config.yaml): "
                         "set the prompt it was trained with (--config or --prompt.* flags)", file=unprompted)
    return dataclasses.replace(judge_config, prompt=trained) if trained is not None else judge_config


def _trained_folder(path):
    """The folder itself when it holds a trained judge (a LoRA adapter or an ehrjudge judge folder), else None."""
    from ehrjudge.judge.model import JUDGE_INFO

    folder = Path(path)
    return folder if (folder / "adapter_config.json").exists() or (folder / JUDGE_INFO).exists() else None


def saved_with_judge(judge_config, lookup):
    """The first thing `lookup(folder)` finds in the judge's adapter folder, then its model folder, else None."""
    for path in (judge_config.adapter, judge_config.model):
        found = lookup(path) if path and Path(path).is_dir() else None
        if found is not None:
            return found
    return None


def reference_or_recorded(reference: Optional[Path], judge_dir) -> Path:
    """`reference` when given, else the reference cohort the trained judge folder `judge_dir` records (with a note)."""
    if reference is not None:
        return reference
    if judge_dir is None or not Path(judge_dir).is_dir():
        raise InputError("--reference DIR is required unless --judge names a trained judge folder")
    from ehrjudge.judge.artifact import recorded_reference

    reference, _ = recorded_reference(Path(judge_dir))
    typer.echo(f"note: reference cohort {reference} (recorded by the judge folder)", err=True)
    return reference


@app.command("judge", context_settings=CONFIG_COMMAND, cls=settings_command("ehrjudge.judge.config:JudgeConfig"),
             help="Judge every synthetic record with the LLM: one CSV row per record with record_id, judge_score "
                  "(argmax label), expected_score (sum k p_k), capped_score (min of it and the cap the judge's cap "
                  "line states) for a judge reading one, calibrated_score when the trained judge saved a "
                  "calibration, entropy and the exact label probabilities p_1..p_10. Score columns of a judge "
                  "dataset split are ignored (with a note). The resolved config (with the chat template) is "
                  "written beside the CSV (.config.yaml).")
def judge_command(
    ctx: typer.Context,
    synthetic: Path = typer.Option(..., "--synthetic", help="synthetic records (parquet/CSV with record_id)"),
    out: Path = typer.Option(..., "--out", help="output CSV"),
    reference: Optional[Path] = typer.Option(None, "--reference", help="reference cohort directory (schema and "
                                                                       "statistics); default: the one the trained "
                                                                       "judge folder records"),
    holdout: Optional[Path] = typer.Option(None, "--holdout", help="held-out real patients (cohort directory), read "
                                                                   "only by a judge of the findings_dcr text; "
                                                                   "default: the holdout/ beside a dataset's "
                                                                   "reference/"),
    judge: Optional[str] = typer.Option(None, "--judge", help="trained judge folder (a run's train/judge); "
                                                              "reads its prompt and calibration"),
    model: Optional[str] = typer.Option(None, "--model", help="base model dir / hub id (zero-shot; a trained judge "
                                                              "folder is --judge)"),
    adapter: Optional[str] = typer.Option(None, "--adapter", help="LoRA adapter directory"),
    batch_size: Optional[int] = typer.Option(None, "--batch-size", help="records per forward pass"),
    config: Optional[Path] = typer.Option(None, "--config", help="YAML file of JudgeConfig settings"),
    engine: str = ENGINE,
    ray_address: Optional[str] = RAY_ADDRESS,
    workers: int = WORKERS,
    cpus_per_worker: float = CPUS_PER_WORKER,
    gpus_per_worker: float = GPUS_PER_WORKER,
) -> None:
    from rich.console import Console

    from ehrjudge.cohort.schema import Schema
    from ehrjudge.config import load_config
    from ehrjudge.engine import EngineConfig, judge_frame
    from ehrjudge.io import check_writable, write_csv
    from ehrjudge.judge.calibration import saved_calibration
    from ehrjudge.judge.reference import reference_for
    from ehrjudge.judge.scoring import JudgeConfig, save_judge_config, with_calibrated_score

    model = one_of(judge, model, "--judge", "--model")
    overrides = _overrides(ctx.args, model=model, adapter=adapter, batch_size=batch_size)
    judge_config = load_config(JudgeConfig, config, overrides)
    judge_config = with_trained_prompt(judge_config, config, overrides)
    engine_config = EngineConfig(engine, ray_address, workers, cpus_per_worker, gpus_per_worker)
    check_writable(out)  # before the model loads
    reference = reference_or_recorded(reference, judge_config.adapter or judge_config.model)
    schema = Schema.load(Path(reference) / "schema.json")
    records = read_records(synthetic, schema)
    stats = reference_for(reference, judge_config.prompt.record_format, holdout)
    scores, tokenizer = judge_frame(judge_config, records, schema, stats, engine_config)
    calibration = saved_with_judge(judge_config, saved_calibration)
    scores = with_calibrated_score(scores, calibration)  # the trained judge's own map, fitted on its val split
    write_csv(out, scores, float_format=FLOAT_FORMAT)
    save_judge_config(judge_config, tokenizer, out.with_suffix(".config.yaml"))
    console = Console()
    console.print(f"judged {len(scores)} records -> {out}")
    counts = scores["judge_score"].value_counts().reindex(range(1, 11), fill_value=0)
    console.print("judge_score histogram (1..10): " + " ".join(str(c) for c in counts))
    if calibration is not None:
        console.print(f"mean calibrated_score {scores['calibrated_score'].mean():.3f} "
                      f"({calibration.slope:.3f} * expected {calibration.intercept:+.3f}, {calibration.fitted_on})")
    console.print(f"mean expected_score {scores['expected_score'].mean():.3f}; "
                  f"mean entropy {scores['entropy'].mean():.3f} nats")


@app.command("baseline", context_settings=CONFIG_COMMAND, cls=settings_command("ehrjudge.judge.config:BaselineConfig"),
             help="Zero-shot agreement of the judge with the verifiable realism score on a judge dataset split, "
                  "beside a plain regressor trained on the train split. Writes report.json, report.md, "
                  "judge_scores.csv and config.yaml to --out.")
def baseline_command(
    ctx: typer.Context,
    dataset: Path = typer.Option(..., "--dataset", help="judge dataset directory (reference/, train.parquet, ...)"),
    out: Path = typer.Option(..., "--out", help="output directory"),
    split: Optional[str] = typer.Option(None, "--split", help="split to evaluate (default test)"),
    limit: Optional[int] = typer.Option(None, "--limit", help="evaluate at most this many records"),
    model: Optional[str] = typer.Option(None, "--model", help="model dir / hub id / ehrjudge checkpoint"),
    adapter: Optional[str] = typer.Option(None, "--adapter", help="LoRA adapter directory"),
    config: Optional[Path] = typer.Option(None, "--config", help="YAML file of BaselineConfig settings"),
) -> None:
    from ehrjudge.config import load_config
    from ehrjudge.judge.baseline import BaselineConfig, run_baseline

    flags = _overrides(ctx.args, split=split, limit=limit)
    judge_flags = flags.setdefault("judge", {})
    judge_flags.update({k: v for k, v in (("model", model), ("adapter", adapter)) if v is not None})
    baseline_config = load_config(BaselineConfig, config, flags)
    report = run_baseline(dataset, out, baseline_config)
    _print_report(report, out)


def _fmt(value, digits: int = 3) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def _print_report(report: dict, out: Path) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console()
    table = Table(title=f"Zero-shot judge vs verifiable score ({report['n_records']} records, {report['split']})")
    for column in ("Realism Score Metric", "Mean", "Std", "Min", "Max"):
        table.add_column(column, justify="left" if column.startswith("Realism") else "right")
    for row in report["score_table"]:
        table.add_row(row["metric"], *(_fmt(row[k], 2) for k in ("mean", "std", "min", "max")))
    console.print(table)
    agreement_table = Table(title="Agreement with the verifiable realism_score")
    for column in ("Scorer", "Pearson [95% CI]", "Spearman [95% CI]", "MAE", "Exact", "Within 1", "Records/s"):
        agreement_table.add_column(column)
    for name, metrics in report["agreement"].items():
        cells = []
        for kind in ("pearson", "spearman"):
            ci = metrics[f"{kind}_ci"]
            cells.append("n/a" if metrics[kind] is None else
                         f"{metrics[kind]:.3f} [{ci[0]:.3f}, {ci[1]:.3f}]")
        agreement_table.add_row(name, *cells, _fmt(metrics["mae"]), _fmt(metrics["exact"]),
                                _fmt(metrics["within_1"]), _fmt(metrics.get("records_per_second"), 1))
    console.print(agreement_table)
    verifiable = report.get("records_per_second", {}).get("verifiable")
    if verifiable is not None:
        console.print(f"verifiable realism score: {verifiable:.1f} records/s")
    console.print(f"report -> {out / 'report.md'}, {out / 'report.json'}")

