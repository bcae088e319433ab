"""One self-contained HTML page (images inline) describing a pipeline run.

Reads only the run folder written by `ehrjudge.pipeline.run`:
    cohort/            vectors.parquet, schema.json
    dataset/           {train,val,test,test_unseen}.parquet, dataset.json
    suite/suite.json   {generator: {metric: {value, goal, range} | {error}}}
    evaluation/{split}.parquet   record_id, generator, realism_score, <scorer>_score, <scorer>_expected
                                 (formula_score: continuous 1..10, shown rounded in the confusion matrix)
    train/metrics.jsonl          one JSON object per logged step (train/*, reward/*, eval/*)
    summary.json
    ablation/table.md  (optional)
"""

from __future__ import annotations

import base64
import html
import io
import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from ehrjudge.synth.config import SPLITS  # noqa: E402

SCORERS = ("zero_shot", "trained", "formula", "regressor", "facts")
CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,sans-serif;max-width:1100px;margin:2em auto;color:#222;padding:0 1em}
h1{margin-bottom:0} h2{border-bottom:2px solid #ddd;padding-bottom:.2em;margin-top:2em}
table{border-collapse:collapse;margin:1em 0;font-size:14px} td,th{border:1px solid #ccc;padding:4px 8px;text-align:right}
th{background:#f3f3f3} td:first-child,th:first-child{text-align:left} .muted{color:#777} img{max-width:100%}
.grid{display:flex;flex-wrap:wrap;gap:1em} .card{background:#fafafa;border:1px solid #e3e3e3;border-radius:6px;padding:.6em 1em}
.scroll{overflow-x:auto} pre{white-space:pre-wrap;background:#f7f7f7;padding:.5em;font-size:12px}
"""


def png_img(fig, alt: str = "figure") -> str:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=90, bbox_inches="tight")
    plt.close(fig)
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{base64.b64encode(buffer.getvalue()).decode()}">'


def html_table(frame: pd.DataFrame, floatfmt: str = "{:.3f}") -> str:
    def cell(value):
        if isinstance(value, float):
            return "" if np.isnan(value) else floatfmt.format(value)
        return html.escape(str(value))

    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in frame.columns)
    rows = "".join("<tr>" + "".join(f"<td>{cell(v)}</td>" for v in row) + "</tr>"
                   for row in frame.itertuples(index=False))
    return f"<div class='scroll'><table><thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table></div>"


def _cohort_section(run: Path) -> str:
    vectors = pd.read_parquet(run / "cohort" / "vectors.parquet")
    schema = json.loads((run / "cohort" / "schema.json").read_text())
    names = [f["name"] for f in schema["features"]]
    values = vectors[names].to_numpy(dtype=float)
    groups = pd.Series([f["group"] for f in schema["features"]]).value_counts()
    cards = (f'<div class="grid"><div class="card"><b>{len(vectors)}</b> patients</div>'
             f'<div class="card"><b>{len(names)}</b> feature columns</div>'
             f'<div class="card"><b>{(values == 0).mean():.1%}</b> zeros (sparsity)</div>'
             f'<div class="card">source: <b>{html.escape(str(schema.get("source")))}</b></div></div>')
    group_table = html_table(groups.rename_axis("group").reset_index(name="columns"))
    return f"<h2>Reference cohort</h2>{cards}{group_table}"


def _dataset_section(run: Path) -> str:
    frames = {s: pd.read_parquet(run / "dataset" / f"{s}.parquet", columns=["generator", "strength", "realism_score"])
              for s in SPLITS if (run / "dataset" / f"{s}.parquet").exists()}
    fig, axes = plt.subplots(1, len(frames), figsize=(3.2 * len(frames), 2.6), sharey=False)
    for ax, (split, frame) in zip(np.atleast_1d(axes), frames.items()):
        counts = frame["realism_score"].value_counts().reindex(range(1, 11), fill_value=0)
        ax.bar(counts.index, counts.to_numpy(), color="#4c78a8")
        ax.set_title(f"{split} (n={len(frame)})")
        ax.set_xticks(range(1, 11))
        ax.set_xlabel("verifiable realism score")
    mix = pd.concat([f.assign(split=s) for s, f in frames.items()])
    table = (mix.groupby(["generator", "split"]).size().unstack(fill_value=0)
             .join(mix.groupby("generator")["realism_score"].mean().rename("mean score")).reset_index())
    return f"<h2>Synthetic records and score histograms</h2>{png_img(fig)}{html_table(table)}"


def _suite_section(run: Path) -> str:
    path = run / "suite" / "suite.json"
    if not path.exists():
        return ""
    suite = json.loads(path.read_text())
    rows = {}
    for generator, metrics in suite.items():
        for metric, result in metrics.items():
            label = metric
            if isinstance(result, dict) and "goal" in result:
                arrow = "↑" if result["goal"] == "maximize" else "↓"
                label = f"{metric} {arrow}"
            value = result.get("value") if isinstance(result, dict) else result
            if isinstance(result, dict) and "error" in result:
                value = "n/a"
            rows.setdefault(label, {})[generator] = value
    frame = pd.DataFrame(rows).T.reset_index().rename(columns={"index": "metric (↑ higher / ↓ lower is better)"})
    return f"<h2>Dataset-level evaluation suite per generator</h2>{html_table(frame)}"


def _probes_section(run: Path) -> str:
    path = run / "probes" / "probes.json"
    if not path.exists():
        return ""
    table = pd.DataFrame(json.loads(path.read_text())["probes"])
    shown = ["probe", "kind", "n"] + [c for c in table.columns if c.endswith(("_mean", "_max"))]
    note = ("<p>Adversarial probes of the reward (scoring/probes.py): a sound score gives every <em>hack</em> probe "
            "at most 3; real held-out patients are cross-fitted (calibrated on the other half of the holdout).</p>")
    return f"<h2>Reward probes: hardened vs seed score vs trained judge</h2>{note}{html_table(table[shown], '{:.2f}')}"


def _agreement_section(run: Path, summary: dict) -> str:
    parts = ["<h2>Zero-shot judge vs trained judge</h2>",
             "<p>Beside the judges, the cheap scorers a user could run instead: <b>formula</b> = the diagonal-z "
             "distance sqrt(&Sigma; z&sup2;) from the reference means and stds the judge's prompt shows, mapped to "
             "1..10 by an increasing line fitted on val; <b>regressor</b> = gradient boosting on the patient "
             "vectors, fitted on train; <b>facts</b> = the same regressor on the numbers the judge's findings text "
             "shows (its checks, closest patient and score cap), the fair comparison for a judge reading that text. "
             "Records/s: scoring only (fitting excluded).</p>"]
    calibration = summary.get("calibration")
    if calibration:
        parts.append(f"<p>trained_calibrated = clip({calibration['slope']:.3f} &times; trained expected score "
                     f"{calibration['intercept']:+.3f}, 1, 10): an increasing affine map fitted on "
                     f"{html.escape(calibration['fitted_on'])}, never on these splits.</p>")
    if any("trained_capped" in scorers for scorers in summary.get("splits", {}).values()):
        parts.append("<p>trained_capped = min(trained expected score, the cap its own cap line states): the "
                     "score a reward or a gate should use, since a trained judge can answer above the cap it is "
                     "shown.</p>")
    for split, scorers in summary.get("splits", {}).items():
        rows = []
        for scorer, metrics in scorers.items():
            rows.append({"scorer": scorer, "mean": metrics["mean"], "std": metrics["std"],
                         "pearson": metrics["pearson"], "pearson 95% CI": _ci(metrics.get("pearson_ci")),
                         "spearman": metrics["spearman"], "spearman 95% CI": _ci(metrics.get("spearman_ci")),
                         "MAE": metrics["mae"], "within 1": metrics["within_1"],
                         "records/s": _rate(metrics.get("records_per_second"))})
        true = summary.get("verifiable", {}).get(split)
        if true:
            rows.insert(0, {"scorer": "verifiable score", "mean": true["mean"], "std": true["std"],
                            "records/s": _rate(true.get("records_per_second"))})
        parts.append(f"<h3>{split}</h3>{html_table(pd.DataFrame(rows))}")
        predictions = run / "evaluation" / f"{split}.parquet"
        if predictions.exists():
            parts.append(_scatter_and_confusion(pd.read_parquet(predictions), split))
            parts.append(_disagreements(pd.read_parquet(predictions), _real_record_ids(run, split)))
    return "".join(parts)


def _rate(records_per_second) -> str:
    return "" if records_per_second is None else f"{records_per_second:,.1f}"


def _ci(interval) -> str:
    return f"[{interval[0]:.2f}, {interval[1]:.2f}]" if interval else ""


def _scatter_and_confusion(frame: pd.DataFrame, split: str) -> str:
    scorers = [s for s in SCORERS if f"{s}_score" in frame.columns]
    fig, axes = plt.subplots(2, len(scorers), figsize=(3.6 * len(scorers), 6.6), squeeze=False)
    rng = np.random.default_rng(0)
    truth = frame["realism_score"].to_numpy()
    for col, scorer in enumerate(scorers):
        shown = frame[f"{scorer}_expected"] if f"{scorer}_expected" in frame else frame[f"{scorer}_score"]
        ax = axes[0, col]
        ax.scatter(truth + rng.uniform(-0.25, 0.25, len(truth)), shown, s=6, alpha=0.5)
        ax.plot([1, 10], [1, 10], color="grey", lw=1)
        ax.set_title(f"{scorer} ({split})")
        ax.set_xlabel("verifiable score")
        ax.set_ylabel("judge score")
        labels = np.rint(frame[f"{scorer}_score"].to_numpy(dtype=float)).astype(int)
        matrix = pd.crosstab(labels, frame["realism_score"].to_numpy()).reindex(
            index=range(1, 11), columns=range(1, 11), fill_value=0)
        ax = axes[1, col]
        ax.imshow(matrix.to_numpy(), origin="lower", cmap="Blues", extent=(0.5, 10.5, 0.5, 10.5))
        ax.set_xlabel("verifiable score")
        ax.set_ylabel(f"{scorer} label")
        ax.set_title("confusion matrix")
    return png_img(fig)


def _real_record_ids(run: Path, split: str) -> set[str]:
    """record_ids of the split's records that are real patients (their text is never shown)."""
    from ehrjudge.cohort.real_patients import dataset_patients, real_rows

    path = run / "dataset" / f"{split}.parquet"
    if not path.exists():
        return set()
    records = pd.read_parquet(path)
    names = [c for c in pd.read_parquet(run / "dataset" / "reference" / "vectors.parquet").columns
             if c != "subject_id"] if (run / "dataset" / "reference" / "vectors.parquet").exists() else []
    mask = real_rows(records, [n for n in names if n in records.columns], dataset_patients(run / "dataset"))
    return set(records["record_id"].astype(str)[mask])


def _disagreements(frame: pd.DataFrame, real_ids: set[str] = frozenset(), top: int = 5) -> str:
    from ehrjudge.cohort.real_patients import REAL_GENERATORS, WITHHELD

    scorer = "trained" if "trained_score" in frame else "zero_shot"
    gap = (frame[f"{scorer}_score"] - frame["realism_score"]).abs()
    worst = frame.assign(gap=gap).nlargest(top, "gap")
    if "summary" in worst.columns:  # real patients appear by record_id and scores only
        real = worst["record_id"].astype(str).isin(real_ids) | worst.get("generator", pd.Series(
            "", index=worst.index)).astype(str).isin(REAL_GENERATORS)
        worst = worst.assign(summary=worst["summary"].where(~real, WITHHELD))
    columns = [c for c in ("record_id", "generator", "realism_score", f"{scorer}_score", "gap", "summary")
               if c in worst.columns]
    return f"<p>Largest disagreements of the {scorer} judge:</p>{html_table(worst[columns])}"


# The trainers' logged names (train/expected.py, reinforce.py, grpo.py): the exact expected reward, or the mean
# reward of the sampled labels; then the KL to the reference and the validation Spearman.
CURVES = ("reward/expected", "reward/sampled", "train/kl", "eval/spearman")


def curve_columns(columns) -> list[str]:
    """The training curves drawn for a metrics.jsonl with these columns, in CURVES order."""
    return [c for c in CURVES if c in set(columns)]


def _training_section(run: Path) -> str:
    path = run / "train" / "metrics.jsonl"
    if not path.exists():
        return ""
    history = pd.DataFrame([json.loads(line) for line in path.read_text().splitlines() if line.strip()])
    panels = curve_columns(history.columns)
    if not panels:
        return ""
    fig, axes = plt.subplots(1, len(panels), figsize=(3.8 * len(panels), 2.8), squeeze=False)
    for ax, column in zip(axes[0], panels):
        series = history[["step", column]].dropna()
        ax.plot(series["step"], series[column], marker="o" if column.startswith("eval/") else None, ms=3)
        ax.set_title(column)
        ax.set_xlabel("step")
    ablation = run / "ablation" / "table.md"
    extra = f"<h3>Ablations</h3><pre>{html.escape(ablation.read_text())}</pre>" if ablation.exists() else ""
    return f"<h2>Training curves</h2>{png_img(fig, 'training curves: ' + ', '.join(panels))}{extra}"


def _header_line(run: Path, summary: dict) -> str:
    """Where the run is, what produced it (version, commit, config hash) and how its training ended."""
    made = summary.get("provenance") or {}
    training = summary.get("training", {})
    parts = [str(run.resolve()), f"ehrjudge {made.get('version', 'version not recorded')}",
             f"commit {made.get('commit') or 'unknown'}", f"config {made.get('config_hash', 'not recorded')}"]
    if training.get("wall_seconds"):
        parts.append(f"training wall time {training['wall_seconds'] / 60:.1f} min")
    line = f"<p class='muted'>{' · '.join(html.escape(p) for p in parts)}</p>"
    if training.get("wall_cap_fired"):
        line += (f"<p><b>Training was ended by the max_wall_minutes safety stop at step {training.get('steps')}</b>, "
                 "before its step budget: this judge depends on the machine's speed.</p>")
    return line


def render_report(run: str | Path) -> str:
    """Return the report's HTML for the run folder `run`."""
    run = Path(run)
    summary = json.loads((run / "summary.json").read_text()) if (run / "summary.json").exists() else {}
    header = f"<h1>ehrjudge run report</h1>{_header_line(run, summary)}"
    sections = [_cohort_section(run), _dataset_section(run), _suite_section(run),
                _agreement_section(run, summary), _probes_section(run), _training_section(run)]
    body = header + "".join(sections)
    return f"<!doctype html><html><head><meta charset='utf-8'><title>ehrjudge report</title><style>{CSS}</style></head><body>{body}</body></html>"


def write_report(run: str | Path) -> Path:
    from ehrjudge.io import write_text

    path = Path(run) / "report.html"
    write_text(path, render_report(run))
    return path
