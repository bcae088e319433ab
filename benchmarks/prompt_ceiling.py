"""What each record text lets any learner reach: a gradient-boosting regressor on the facts a prompt shows.

    python benchmarks/prompt_ceiling.py [--dataset runs/default/dataset] [--out benchmarks/results/prompt_ceiling.json]

The judge reads a text, not the vector. Before asking it to learn the verifiable (hardened) score, measure what the
text carries: for each design, the facts it shows become features of a HistGradientBoostingRegressor fitted on the
train split (realism_continuous), and its Spearman with realism_score on test and test_unseen is that text's
ceiling for a learner of this kind (the judge is another learner; it can fall below, and rarely rises above).
- deviations: sex, age, status, the counts of |z| > 3 and > 2, the `top` largest |z| (the default text before `findings`);
- findings: deviations + what judge/findings.py adds: invalid and out-of-range counts, rubric pass rate (the
  weighted rule counts), largest codes-per-table |normal score|;
- findings_dcr: findings + the record's distance to its closest reference patient (the text's closest-patient line,
  which needs the patients), + whether an essential rule is broken (the text names them);
- findings_dcr + caps: + the score cap line (PromptConfig.show_caps, the lowest of the hardened caps);
- findings_dcr + caps + typicality: + the distance from the reference's centre over held-out patients' median
  (PromptConfig.show_typicality);
- full vector: the same regressor on the record's every column (the `regressor` baseline).
"""

from __future__ import annotations

import argparse
import platform
from pathlib import Path

import numpy as np
import pandas as pd
from scipy.stats import spearmanr
from sklearn.ensemble import HistGradientBoostingRegressor

from ehrjudge.cohort.reference_stats import ReferenceStats
from ehrjudge.cohort.schema import Cohort
from ehrjudge.io import write_json
from ehrjudge.scoring.hardened.checks import RecordChecks
from ehrjudge.scoring.realism import ScoreConfig

ROOT = Path(__file__).resolve().parents[1]
SPLITS = ("train", "test", "test_unseen")


def deviation_features(matrix: np.ndarray, stats: ReferenceStats, names: list[str], top: int) -> np.ndarray:
    """(n, 5 + top): what the deviations text shows, from the text's own z (ReferenceStats.z_scores; a value off a
    reference-constant column, 'never in reference', counts as |z| 1000)."""
    magnitude = np.abs([[z for z in stats.z_scores(dict(zip(names, row))).values()] for row in matrix])  # (n, p)
    largest = -np.sort(-np.where(np.isinf(magnitude), 1e3, magnitude), axis=1)[:, :top]
    demographics = [matrix[:, names.index(name)] for name in ("gender", "age", "is_dead") if name in names]
    return np.column_stack(demographics + [(magnitude > 3).sum(1), (magnitude > 2).sum(1), largest])


def check_features(matrix: np.ndarray, checks: RecordChecks) -> np.ndarray:
    found = checks.check(matrix)
    return np.column_stack([found["n_invalid"], found["n_unusual"], found["rubric_pass"], found["sparsity_z"]])


def cap_feature(frame: pd.DataFrame, essential: np.ndarray, config: ScoreConfig) -> np.ndarray:
    """The score cap line's value: min(privacy_cap, invalid_cap if invalid, essential_cap if essential broken)."""
    return np.minimum.reduce([frame.privacy_cap.to_numpy(), np.where(frame.n_invalid > 0, config.invalid_cap, 10.0),
                              np.where(essential, config.essential_cap, 10.0)])


def ceiling(features: dict[str, np.ndarray], frames: dict[str, pd.DataFrame]) -> dict[str, float]:
    model = HistGradientBoostingRegressor(random_state=0).fit(features["train"], frames["train"].realism_continuous)
    return {split: float(spearmanr(model.predict(features[split]), frames[split].realism_score).statistic)
            for split in SPLITS[1:]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", type=Path, default=ROOT / "runs" / "default" / "dataset")
    parser.add_argument("--top", type=int, default=6, help="deviation items shown (PromptConfig.deviation_items)")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "prompt_ceiling.json")
    args = parser.parse_args()

    reference = Cohort.load(args.dataset / "reference")
    names = reference.schema.names
    stats = ReferenceStats.from_cohort(reference)
    checks = RecordChecks(ScoreConfig(), reference.schema, stats)
    frames = {split: pd.read_parquet(args.dataset / f"{split}.parquet") for split in SPLITS}
    matrices = {split: frame[names].to_numpy(dtype=np.float64) for split, frame in frames.items()}
    deviations = {s: deviation_features(m, stats, names, args.top) for s, m in matrices.items()}
    findings = {s: np.column_stack([deviations[s], check_features(m, checks)]) for s, m in matrices.items()}
    essential = {s: checks.check(m)["essential_violated"] for s, m in matrices.items()}
    dcr = {s: np.column_stack([findings[s], frames[s].nn_distance, essential[s]]) for s in SPLITS}
    caps = {s: np.column_stack([dcr[s], cap_feature(frames[s], essential[s], ScoreConfig())]) for s in SPLITS}
    designs = {
        "deviations": deviations,
        "findings": findings,
        "findings_dcr": dcr,
        "findings_dcr + caps": caps,
        "findings_dcr + caps + typicality": {s: np.column_stack([caps[s], frames[s].typicality_ratio]) for s in SPLITS},
        "full vector (the regressor baseline)": matrices,
    }
    table = {name: ceiling(features, frames) for name, features in designs.items()}
    near_copies = {split: int(frames[split].near_copy.sum()) for split in SPLITS[1:]}
    write_json(args.out, {"dataset": str(args.dataset), "top": args.top, "machine": platform.machine(),
                          "spearman_test_and_unseen": table, "near_copies": near_copies,
                          "n": {split: len(frames[split]) for split in SPLITS}})
    print(f"{'record text':46s} {'test':>6s} {'test_unseen':>12s}   (Spearman of a GBM on what the text shows)")
    for name, row in table.items():
        print(f"{name:46s} {row['test']:6.3f} {row['test_unseen']:12.3f}")
    print(f"near copies (capped by privacy; only the findings_dcr texts show them): {near_copies}")
    print(f"-> {args.out}")


if __name__ == "__main__":
    main()
