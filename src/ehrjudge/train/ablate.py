"""Ablation grid over the trainer's design choices, each cell a small training run; one table out.

Axes: method x kl_coef x metric weights (w_maha/w_knn; the dataset is re-scored with the other weights by
ehrjudge.scoring.realism.score_records) x reward shape x advantage (reinforce: raw / batch_mean / normalized;
expected: raw / normalized, batch_mean being the same exact gradient as raw; grpo always group-normalizes)
x record format (the judge's text: compact, csv, deviations). Every cell is judged by validation Spearman (higher is better, [-1, 1]), Pearson,
MAE (lower is better) and |mean judge - mean score| of its best checkpoint; the budget of one cell is
`base.max_steps` optimizer steps on `base.train_records` records.
"""

from __future__ import annotations

import dataclasses
import itertools
import logging
import shutil
import time
from pathlib import Path

import pandas as pd

from ehrjudge.cohort.schema import Cohort
from ehrjudge.config import save_config
from ehrjudge.io import atomic_dir, read_table, write_csv, write_json, write_parquet, write_text
from ehrjudge.train.ablate_config import AblateConfig
from ehrjudge.synth.config import SPLITS
from ehrjudge.train.data import resolve_dataset

log = logging.getLogger(__name__)
ADVANTAGES = {"reinforce": {"raw", "batch_mean", "normalized"}, "expected": {"raw", "normalized"}, "grpo": set()}


def rescore_dataset(dataset: Path, out: Path, w_maha: float, w_knn: float) -> Path:
    """A copy of `dataset` whose score columns come from the realism scorer with other metric weights.

    Both weightings of the ablation are re-scored the same way (reference cohort only, no holdout), so the
    two cells differ by the weights alone.
    """
    from ehrjudge.scoring.realism import SCORE_COLUMNS, ScoreConfig, score_records

    if (out / "train.parquet").exists():
        return out
    reference = Cohort.load(dataset / "reference")
    config = ScoreConfig(definition="seed", w_maha=w_maha, w_knn=w_knn)  # the weights are the seed's
    with atomic_dir(out) as tmp:
        shutil.copytree(dataset / "reference", tmp / "reference")
        if (dataset / "holdout").is_dir():  # the patients a findings_dcr text reads (not used by these labels)
            shutil.copytree(dataset / "holdout", tmp / "holdout")
        for split in SPLITS:
            frame = read_table(dataset / f"{split}.parquet")
            scores = score_records(reference, frame[["record_id"] + reference.schema.names], config)
            kept = frame.drop(columns=[c for c in SCORE_COLUMNS if c in frame.columns])
            write_parquet(tmp / f"{split}.parquet", kept.merge(scores, on="record_id", how="left"))
        save_config(config, tmp / "score_config.yaml")
    return out


def grid(config: AblateConfig) -> list[dict]:
    cells = []
    for fmt, method, kl, weights, reward in itertools.product(config.record_formats, config.methods,
                                                              config.kl_coefs, config.weights, config.rewards):
        advantages = ADVANTAGES[method] & set(config.advantages)
        for advantage in [a for a in config.advantages if a in advantages] or ["-"]:
            cells.append({"record_format": fmt, "method": method, "kl_coef": kl, "weights": weights,
                          "reward": reward, "advantage": advantage})
    return cells[:config.max_cells] if config.max_cells else cells


def run_ablation(config: AblateConfig) -> pd.DataFrame:
    """Train every cell, write table.{md,csv,json} into output_dir, return the table."""
    from ehrjudge.train.loop import train

    out = Path(config.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    save_config(config, out / "config.yaml")
    dataset = resolve_dataset(config.base.dataset)
    datasets = {}
    rows = []
    shared_caches: dict[str, dict] = {}  # per record format: the frozen pass over its prompts is done once
    for number, cell in enumerate(grid(config)):
        if cell["weights"] not in datasets:
            w_maha, w_knn = (float(v) for v in cell["weights"].split("/"))
            datasets[cell["weights"]] = rescore_dataset(dataset, out / "datasets" / f"w{w_maha:g}-{w_knn:g}",
                                                        w_maha, w_knn)
        name = f"{number:03d}-{cell['record_format']}-{cell['method']}-kl{cell['kl_coef']:g}-w{cell['weights'].replace('/', '_')}-" \
               f"{cell['reward']}-{cell['advantage']}"
        cell_config = dataclasses.replace(
            config.base, method=cell["method"], kl_coef=cell["kl_coef"], reward=cell["reward"],
            advantage=config.base.advantage if cell["advantage"] == "-" else cell["advantage"],
            prompt=dataclasses.replace(config.base.prompt, record_format=cell["record_format"]),
            dataset=str(datasets[cell["weights"]]), output_dir=str(out / "cells" / name))
        log.info("ablation cell %d: %s", number, name)
        start = time.perf_counter()
        summary = train(cell_config, shared_cache=shared_caches.setdefault(cell["record_format"], {}))
        best = _best_validation(Path(cell_config.output_dir))
        rows.append({**cell, "steps": summary["steps"], "seconds": round(time.perf_counter() - start, 1),
                     "val_spearman_best": best.get("spearman"), "val_pearson": best.get("pearson"),
                     "val_mae": best.get("mae"), "val_mean_gap": _gap(best),
                     "val_entropy": best.get("entropy"), "best_step": best.get("step")})
        _write_table(out, pd.DataFrame(rows), config)  # after every cell: a killed grid keeps its rows
    return pd.DataFrame(rows)


def _best_validation(run_dir: Path) -> dict:
    import json

    path = run_dir / "best" / "validation.json"
    return json.loads(path.read_text()) if path.exists() else {}


def _gap(metrics: dict) -> float | None:
    if "judge_mean" not in metrics:
        return None
    return round(abs(metrics["judge_mean"] - metrics["score_mean"]), 4)


def _write_table(out: Path, table: pd.DataFrame, config: AblateConfig) -> None:
    write_csv(out / "table.csv", table, float_format="%.4f")
    write_json(out / "table.json", table.to_dict(orient="records"))
    budget = (f"Per-cell budget: {config.base.max_steps} optimizer steps of {config.base.batch_size} records "
              f"(train_records {config.base.train_records}, validation on {config.base.val_records} records), "
              f"model {config.base.model or 'SmolLM2-135M-Instruct'}, LoRA r {config.base.lora_r} on the top "
              f"{config.base.train_layers} layers, lr {config.base.learning_rate}.")
    header = "| " + " | ".join(table.columns) + " |"
    rule = "|" + "---|" * len(table.columns)
    body = ["| " + " | ".join("" if pd.isna(v) else (f"{v:.3f}" if isinstance(v, float) else str(v))
                              for v in row) + " |" for row in table.itertuples(index=False)]
    write_text(out / "table.md", "\n".join(["# Ablation", "", budget, "", header, rule, *body, ""]))
