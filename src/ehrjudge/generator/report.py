"""OUT/report.html of `ehrjudge tune-generator`: the evaluation table and the training curves, self-contained."""

from __future__ import annotations

import html
from pathlib import Path

import matplotlib.pyplot as plt
import pandas as pd

from ehrjudge.generator.evaluate import SUITE_SHOWN
from ehrjudge.io import write_text
from ehrjudge.pipeline.report import CSS, html_table, png_img

COLUMNS = ["hardened_mean", "seed_mean", "reward_mean", "judge_mean", "hacking_gap", "near_copy_rate",
           "exact_copy_rate", "distinct_rate", "parse_failure_rate", "invalid_rate"]


def evaluation_table(summary: dict) -> pd.DataFrame:
    rows = []
    for name, figures in summary["rows"].items():
        row = {"generator": name, **{c: figures.get(c) for c in COLUMNS}}
        row.update({m: figures.get("suite", {}).get(m) for m in SUITE_SHOWN})
        rows.append(row)
    return pd.DataFrame(rows).astype(object).where(lambda f: f.notna(), float("nan"))


def _curves(history: list[dict]) -> str:
    if not history:
        return "<p class='muted'>No RL steps (reward none: the warm start alone).</p>"
    frame = pd.DataFrame(history)
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.4))
    for column, label in (("rl/reward_mean", "reward"), ("rl/hardened_mean", "verifiable (hardened)")):
        if column in frame:
            axes[0].plot(frame["step"], frame[column], label=label)
    axes[0].set(xlabel="RL step", ylabel="mean over the step's group", title="reward and verifiable score")
    axes[0].legend()
    if "rl/hacking_gap" in frame:
        axes[1].plot(frame["step"], frame["rl/hacking_gap"], color="tab:red")
        axes[1].axhline(0.5, ls="--", color="grey")
    axes[1].set(xlabel="RL step", title="hacking gap (reward - verifiable)")
    for column in ("rl/parse_failure_rate", "rl/near_copy_rate", "rl/distinct_rate"):
        if column in frame:
            axes[2].plot(frame["step"], frame[column], label=column.removeprefix("rl/"))
    axes[2].set(xlabel="RL step", title="parse failures, near copies, distinct")
    axes[2].legend()
    return png_img(fig)


def render(summary: dict) -> str:
    runaway = summary.get("runaway_step")
    gap_line = (f"The hacking gap's 5-step mean first exceeded 0.5 points at step {runaway}." if runaway else
                "The hacking gap's 5-step mean never exceeded 0.5 points (or the reward is not on the 1-10 scale).")
    timings = ", ".join(f"{k} {v:.0f} s" for k, v in summary["timings"].items())
    failures = "".join(f"<li>{html.escape(f)}</li>" for f in summary.get("parse_failures", [])[:5])
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>tune-generator: {summary['reward']}</title>"
            f"<style>{CSS}</style></head><body><h1>Generator tuned with reward <code>{summary['reward']}</code></h1>"
            f"<p class='muted'>{summary['rl_steps']} RL steps; {summary['eval_records']} records sampled per row; "
            f"{timings}.</p><h2>Evaluation</h2>{html_table(evaluation_table(summary))}<p>{gap_line}</p>"
            f"<h2>Training curves</h2>{_curves(summary['history'])}"
            f"<h2>Parse failures (first 5)</h2><ul>{failures or '<li>none</li>'}</ul></body></html>")


def write_report(out: Path, summary: dict) -> Path:
    path = Path(out) / "report.html"
    write_text(path, render(summary))
    return path
