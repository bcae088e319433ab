"""`ehrjudge train` (RLVR training of the judge), `ehrjudge evaluate-judge`, `ehrjudge ablate`, `ehrjudge compare`."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Optional

import typer

from ehrjudge.cli.app import CONFIG_COMMAND, app, one_of, settings_command

log = logging.getLogger(__name__)


@app.command("train", context_settings=CONFIG_COMMAND, cls=settings_command("ehrjudge.train.config:TrainConfig"),
             help="Train the judge with RL from the verifiable realism score (methods: expected, reinforce, grpo). "
                  "Settings come from the dataclass defaults, then --config YAML, then --key value flags; unknown "
                  "keys fail. The resolved config is saved as OUT/config.yaml (--out sets output_dir).")
def train_command(
    ctx: typer.Context,
    config: Optional[Path] = typer.Option(None, "--config", help="YAML file of TrainConfig settings"),
    out: Optional[Path] = typer.Option(None, "--out", help="run directory: config.yaml, checkpoints/, best/, final/, "
                                                          "metrics (the output_dir setting)"),
    resume: bool = typer.Option(False, "--resume", help="continue from OUT's latest checkpoint"),
) -> None:
    from rich.console import Console

    from ehrjudge.config import load_config
    from ehrjudge.train.config import TrainConfig
    from ehrjudge.train.loop import train

    flags = list(ctx.args) + (["--output-dir", str(out)] if out is not None else [])
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
    if summary["wall_cap_fired"]:
        console.print(f"[yellow]warning:[/] the max_wall_minutes safety stop ended training at step "
                      f"{summary['steps']} of {summary['budget_steps']}: this judge is not reproducible")


@app.command("evaluate-judge")
def evaluate_judge_command(
    judge: Optional[Path] = typer.Option(None, "--judge", help="trained judge: a run's train/judge, best/ or final/ "
                                                              "dir (or any HF dir)"),
    model: Optional[Path] = typer.Option(None, "--model", hidden=True, help="old spelling of --judge"),
    dataset: Optional[Path] = typer.Option(None, "--dataset", help="judge dataset dir (default: the default one)"),
    out: Optional[Path] = typer.Option(None, "--out", help="write evaluation.json (+ .md) into this dir"),
    zero_shot: str = typer.Option("auto", "--zero-shot", help="auto (read a baseline report, else compute), "
                                                              "compute, or skip"),
    baseline: Optional[list[Path]] = typer.Option(None, "--baseline", help="dirs to search for baseline report.json"),
    batch_size: int = typer.Option(8, "--batch-size", help="records per forward pass"),
    limit: int = typer.Option(0, "--limit", help="evaluate a seeded subset of at most N records per split (0 = all)"),
) -> None:
    """Agreement of a trained judge with the verifiable score on test and test_unseen (+ zero-shot, regressor)."""
    from rich.console import Console

    from ehrjudge.io import write_json, write_text
    from ehrjudge.train.data import resolve_dataset
    from ehrjudge.train.evaluate import evaluate_judge

    judge = one_of(judge, model, "--judge", "--model")
    if judge is None:
        raise typer.BadParameter("--judge DIR is required", param_hint="--judge")
    if zero_shot not in ("auto", "compute", "skip"):
        raise typer.BadParameter("--zero-shot must be auto, compute or skip")
    result = evaluate_judge(judge, resolve_dataset(dataset), zero_shot=zero_shot, baseline_dirs=baseline,
                            batch_size=batch_size, limit=limit)
    text = evaluation_text(result)
    Console().print(text, markup=False, highlight=False)
    if out is not None:
        write_json(out / "evaluation.json", result)
        write_text(out / "evaluation.md", text + "\n")


def evaluation_text(result: dict) -> str:
    """The original's block per split, then one agreement table row per judge."""
    from ehrjudge.train.evaluate import original_block

    def fmt(value):
        return "n/a" if value is None else f"{value:.3f}"

    lines = []
    for split, split_result in result["splits"].items():
        lines += [f"== {split} ({split_result['n_records']} records) ==", original_block(split_result), "",
                  f"{'scorer':58s} {'pearson [95% CI]':>24s} {'spearman [95% CI]':>24s} {'MAE':>6s} {'within-1':>8s} "
                  f"{'mean gap':>8s} {'records/s':>10s}"]
        for name, row in split_result["rows"].items():
            def with_ci(kind):
                ci = row.get(f"{kind}_ci")
                return f"{fmt(row[kind])} [{fmt(ci[0])}, {fmt(ci[1])}]" if ci else fmt(row[kind])

            gap = row["judge_mean"] - row["true_mean"]
            speed = row.get("records_per_second")
            lines.append(f"{name[:58]:58s} {with_ci('pearson'):>24s} {with_ci('spearman'):>24s} "
                         f"{row['mae']:6.3f} {row['within_1']:8.3f} {gap:+8.3f} "
                         f"{'n/a' if speed is None else f'{speed:.1f}':>10s}")
        verifiable_speed = split_result["verifiable"].get("records_per_second")
        if verifiable_speed is not None:
            lines.append(f"verifiable realism score itself: {verifiable_speed:.1f} records/s")
        lines.append("")
    calibration = result.get("calibration")
    if calibration:
        lines.append(f"calibrated score = clip({calibration['slope']:.4f} * score {calibration['intercept']:+.4f}, "
                     f"1, 10), fitted on {calibration['fitted_on']} (score: the capped score where the judge reads a "
                     "cap line, else the expected score)")
    return "\n".join(lines)


@app.command("ablate", context_settings=CONFIG_COMMAND,
             cls=settings_command("ehrjudge.train.ablate_config:AblateConfig"),
             help="Run the ablation grid (method x kl_coef x metric weights x reward shape x advantage), one small "
                  "training run per cell, and write OUT/table.{md,csv,json} (--out sets output_dir).")
def ablate_command(
    ctx: typer.Context,
    config: Optional[Path] = typer.Option(None, "--config", help="YAML file of AblateConfig settings"),
    out: Optional[Path] = typer.Option(None, "--out", help="where cells, re-scored datasets and the table go "
                                                          "(the output_dir setting)"),
) -> None:
    from rich.console import Console

    from ehrjudge.config import load_config
    from ehrjudge.train.ablate import AblateConfig, run_ablation

    flags = list(ctx.args) + (["--output-dir", str(out)] if out is not None else [])
    ablate_config = load_config(AblateConfig, config, flags)
    table = run_ablation(ablate_config)
    Console().print(table.to_string(index=False), markup=False, highlight=False)
    Console().print(f"table: {Path(ablate_config.output_dir) / 'table.md'}")


@app.command("compare", context_settings=CONFIG_COMMAND,
             cls=settings_command("ehrjudge.train.preference_config:CompareConfig"),
             help="Compare the ways of building a realism judge on the same held-out records and pairs: RLVR judge, "
                  "Bradley-Terry reward model, DPO judge, pairwise judge (pairwise accuracy and swap conflict rate), "
                  "regressor and formula, with 95% intervals, records/s and training time. Reads a run folder "
                  "(--run) or given folders, and trains the preference methods named in --train. Writes "
                  "OUT/compare.{md,csv,json} (--out sets output_dir).")
def compare_command(
    ctx: typer.Context,
    config: Optional[Path] = typer.Option(None, "--config", help="YAML file of CompareConfig settings"),
    out: Optional[Path] = typer.Option(None, "--out", help="where the table and methods trained here go "
                                                          "(the output_dir setting)"),
) -> None:
    from rich.console import Console

    from ehrjudge.config import load_config
    from ehrjudge.train.compare import comparison_table, markdown, run_compare
    from ehrjudge.train.preference_config import CompareConfig, run_defaults

    flags = list(ctx.args) + (["--output-dir", str(out)] if out is not None else [])
    compare_config = load_config(CompareConfig, config, flags)
    if compare_config.run:  # the methods trained here share the run's RLVR settings
        compare_config = load_config(CompareConfig, config, flags, base=run_defaults(compare_config.run))
    result = run_compare(compare_config)
    console = Console()
    console.print(markdown(comparison_table(result["rows"])), markup=False, highlight=False, soft_wrap=True)
    console.print(f"table: {Path(compare_config.output_dir) / 'compare.md'}")
