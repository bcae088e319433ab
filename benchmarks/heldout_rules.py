"""Clinical violations the judge never saw: issue 15's test of a job a formula cannot do.

    python benchmarks/heldout_rules.py --cohort runs/default/cohort [--steps 200] [--out benchmarks/results/heldout_rules.json]

1. A judge dataset is labelled by the hardened score with the HELD-OUT rules removed from its rubric (the
   sex-specific diagnosis rules by default), and every train / val record that breaks a held-out rule is dropped,
   so neither the labels nor the training records carry them (asserted).
2. The judge trains on it (configs/train_default.yaml with the `deviations` text, `--steps` optimizer steps).
3. Test: the dataset's held-out real patients (clean) and the same patients with one sex-specific code of the
   other sex added (violators, scoring/probes.rule_violators). Each scorer's AUC at ranking clean above violators:
   trained judge, zero-shot judge, diagonal-z formula, regressor, the seed score and the score the judge was
   trained on (held-out rules removed). The full hardened score knows the rules and is shown as the ceiling.
Target (issue 15): judge AUC >= 0.75 while seed, formula and regressor stay <= 0.6.
"""

from __future__ import annotations

import argparse
import logging
import platform
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import yaml
from sklearn.metrics import roc_auc_score

from ehrjudge.cohort.reference_stats import ReferenceStats
from ehrjudge.cohort.schema import Cohort
from ehrjudge.config import load_config
from ehrjudge.io import write_json
from ehrjudge.judge.baseline_scorers import BaselineScorers
from ehrjudge.judge.calibration import saved_calibration
from ehrjudge.judge.model import load_judge
from ehrjudge.judge.scoring import matrix_scorer
from ehrjudge.scoring.hardened.rubric import Rubric
from ehrjudge.scoring.probes import rule_violators
from ehrjudge.scoring.realism import RealismScorer, ScoreConfig
from ehrjudge.scoring.single_table.rules import DEFAULT_RULES, evaluate_expression, load_rules
from ehrjudge.synth.dataset import DatasetConfig, build_dataset
from ehrjudge.train.config import TrainConfig
from ehrjudge.train.loop import train

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results" / "heldout_rules.json"
HELD_OUT = ["male_with_pregnancy_code", "male_with_female_specific_code", "female_with_male_specific_code"]


def rules_without(held_out: list[str], out: Path) -> Path:
    data = yaml.safe_load(DEFAULT_RULES.read_text())
    data["rules"] = [rule for rule in data["rules"] if rule["id"] not in held_out]
    out.write_text(yaml.safe_dump(data, sort_keys=False))
    return out


def drop_violators(dataset: Path, held_out: list[str]) -> dict[str, int]:
    """Remove train / val records breaking a held-out rule; return how many per split."""
    reference = Cohort.load(dataset / "reference")
    rules = Rubric([rule for rule in load_rules() if rule["id"] in held_out], reference.schema).rules  # applicable
    dropped = {}
    for split in ("train", "val"):
        frame = pd.read_parquet(dataset / f"{split}.parquet")
        matrix = frame[reference.schema.names].to_numpy(dtype=np.float64)
        bad = np.logical_or.reduce([evaluate_expression(r["violation"], matrix, reference.schema) for r in rules])
        frame[~bad].reset_index(drop=True).to_parquet(dataset / f"{split}.parquet")
        dropped[split] = int(bad.sum())
        again = pd.read_parquet(dataset / f"{split}.parquet")[reference.schema.names].to_numpy(dtype=np.float64)
        assert not np.logical_or.reduce([evaluate_expression(r["violation"], again, reference.schema)
                                         for r in rules]).any()
    return dropped


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cohort", type=Path, required=True)
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--size", type=int, default=3000)
    parser.add_argument("--held-out", nargs="+", default=HELD_OUT)
    parser.add_argument("--work", type=Path, default=ROOT / "runs" / "heldout-rules")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)

    start = time.perf_counter()
    rules_file = rules_without(args.held_out, args.work / "rules_without_held_out.yaml")
    training_score = ScoreConfig(rules_file=rules_file)
    dataset = args.work / "dataset"
    if not (dataset / "train.parquet").exists():
        build_dataset(args.cohort, dataset, DatasetConfig(size=args.size, score=training_score))
        dropped = drop_violators(dataset, args.held_out)
    else:
        dropped = None
    judge_dir = args.work / "judge"
    # The `deviations` text, not the default `findings`: findings name the rules the packaged rubric finds broken,
    # held-out ones included, which would hand the judge the answer.
    config = load_config(TrainConfig, ROOT / "configs" / "train_default.yaml",
                         ["--dataset", str(dataset), "--output-dir", str(judge_dir), "--max-steps", str(args.steps),
                          "--max-wall-minutes", "0", "--prompt.record-format", "deviations",
                          "--prompt.max-record-tokens", "128"])
    if not (judge_dir / "best").exists():
        train(config)

    reference, holdout = Cohort.load(dataset / "reference"), Cohort.load(dataset / "holdout")
    violators, clean = rule_violators(holdout.matrix(), reference.schema, np.random.default_rng(0))
    records = np.vstack([clean, violators])
    is_clean = np.r_[np.ones(len(clean), dtype=int), np.zeros(len(violators), dtype=int)]
    stats = ReferenceStats.from_dir(dataset / "reference")
    cheap = BaselineScorers.fit(dataset, reference.schema, stats)
    scores = {}
    for name, config_score in (("seed", ScoreConfig(definition="seed")), ("hardened_as_trained", training_score),
                               ("hardened_full_rubric", ScoreConfig())):
        fitted = RealismScorer(config_score, reference.schema).fit(reference.matrix(), holdout.matrix())
        scores[name] = fitted.score(records)["realism_continuous"].to_numpy()
    scores["formula"] = cheap.formula.score(records)
    scores["regressor"] = cheap.regressor_score(records)
    for name, path in (("judge_trained", judge_dir / "best"), ("judge_zero_shot", None)):
        model, tokenizer = load_judge(str(path) if path else None, "auto", "auto")
        calibration = saved_calibration(path) if path else None
        scores[name] = matrix_scorer(model, tokenizer, reference.schema, config.prompt, stats, 8, calibration)(records)
    table = {name: {"auc_clean_above_violator": float(roc_auc_score(is_clean, values)),
                    "mean_clean": float(values[is_clean == 1].mean()),
                    "mean_violator": float(values[is_clean == 0].mean())} for name, values in scores.items()}
    result = {"machine": platform.processor() or platform.machine(), "held_out_rules": args.held_out,
              "steps": args.steps, "dropped_from_training": dropped, "n_clean": int(len(clean)),
              "n_violators": int(len(violators)), "scorers": table, "wall_seconds": time.perf_counter() - start}
    write_json(args.out, result)
    print(f"held-out rules: {', '.join(args.held_out)}; {len(clean)} clean held-out patients vs {len(violators)} "
          f"violators; judge trained {args.steps} steps; dropped from training {dropped}")
    for name, row in table.items():
        print(f"{name:22s} AUC {row['auc_clean_above_violator']:.3f}  mean clean {row['mean_clean']:.2f}  "
              f"violator {row['mean_violator']:.2f}")
    print(f"-> {args.out} ({result['wall_seconds'] / 60:.1f} min)")


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    main()
