"""What every tuned generator (and the Gaussian copula beside it) is measured by, on a fixed number of records.

    hardened_mean   mean realism_continuous of the hardened verifiable score over all completions (one that does
                    not parse counts 1, the lowest score); hardened_mean_parsed over parsed records only
    seed_mean       the same under the original definition (0.85 Mahalanobis + 0.15 kNN)
    reward_mean     the reward the generator was tuned on, same records (unparsed: parse_failure_reward)
    hacking_gap     reward_mean - hardened_mean: how far the reward has run away from the verifiable score
    distinct_rate   distinct parsed records / parsed records (1 = no duplicates; mode collapse lowers it)
    near_copy_rate  parsed records the hardened score flags as near copies of a reference patient (DCR below the
                    held-out patients' 5th percentile); exact_copy_rate for exact copies
    suite/...       the dataset-level suite (scoring/suite.py) on the parsed records: dimension-wise, correlation
                    distance, non-zero code columns, detection AUC, membership inference, TSTR utility, ...
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from ehrjudge.cohort.schema import Cohort
from ehrjudge.generator.model import Samples

# Suite metrics shown in the report's table (all of them are in summary.json).
SUITE_SHOWN = ["dimension/mean_abs_diff", "correlation/frobenius_distance", "sparsity/nzc_coverage",
               "detection/logistic_auc", "realism/near_copy_rate", "privacy/membership_auc", "efficacy/tstr_auroc"]


def with_failures(values: np.ndarray, samples: Samples, failure_value: float) -> np.ndarray:
    """(n completions,) values: parsed records' `values` in order, `failure_value` for the others."""
    out = np.full(len(samples.parsed), failure_value, dtype=np.float64)
    out[samples.parsed] = values
    return out


def step_metrics(samples: Samples, verifiable: dict, rewards: np.ndarray | None, on_score_scale: bool) -> dict:
    """The cheap per-step figures: verifiable score, reward, gap, parse failures, duplicates."""
    parsed = samples.records
    hardened = verifiable["hardened"].score(parsed) if len(parsed) else None
    truth = with_failures(hardened["realism_continuous"].to_numpy() if hardened is not None else np.array([]),
                          samples, 1.0)
    metrics = {"hardened_mean": float(truth.mean()), "parse_failure_rate": samples.failure_rate,
               "distinct_rate": distinct_rate(parsed, verifiable["hardened"].schema.names),
               "near_copy_rate": float(hardened["near_copy"].mean()) if hardened is not None else 0.0}
    if rewards is not None:
        metrics["reward_mean"] = float(rewards.mean())
    if rewards is not None and on_score_scale:
        metrics["hacking_gap"] = metrics["reward_mean"] - metrics["hardened_mean"]
    return metrics


def distinct_rate(records: pd.DataFrame, names: list[str]) -> float:
    if len(records) == 0:
        return 0.0
    return float(len(records[names].drop_duplicates()) / len(records))


def evaluate_samples(samples: Samples, reference: Cohort, holdout: Cohort | None, verifiable: dict,
                     reward=None, judge=None, parse_failure_reward: float = 1.0,
                     reward_on_score_scale: bool = True) -> dict:
    """Every figure of the module docstring for one set of samples (reward/judge: optional scorers)."""
    from ehrjudge.scoring.suite import SuiteConfig, evaluate

    parsed = samples.records
    names = reference.schema.names
    out = {"records": int(len(samples.parsed)), "parsed": int(samples.parsed.sum()),
           "parse_failure_rate": samples.failure_rate, "distinct_rate": distinct_rate(parsed, names)}
    for definition, scorer in verifiable.items():
        scores = scorer.score(parsed) if len(parsed) else None
        values = scores["realism_continuous"].to_numpy() if scores is not None else np.array([])
        out[f"{definition}_mean"] = float(with_failures(values, samples, 1.0).mean())
        out[f"{definition}_mean_parsed"] = float(values.mean()) if len(values) else None
        if definition == "hardened" and scores is not None:
            out["near_copy_rate"] = float(scores["near_copy"].mean())
            out["exact_copy_rate"] = float(scores["exact_copy"].mean())
            out["invalid_rate"] = float((scores["n_invalid"] > 0).mean())
            out["rubric_pass_mean"] = float(scores["rubric_pass"].mean())
    for name, scorer in (("reward", reward), ("judge", judge)):
        if scorer is None:
            continue
        values = np.asarray(scorer(parsed), dtype=np.float64) if len(parsed) else np.array([])
        out[f"{name}_mean"] = float(with_failures(values, samples, parse_failure_reward).mean())
    if "reward_mean" in out and reward_on_score_scale:
        out["hacking_gap"] = out["reward_mean"] - out["hardened_mean"]
    if len(parsed) >= 2:
        report = evaluate(reference, parsed, holdout, SuiteConfig(per_feature=False))
        out["suite"] = {row["name"]: row["value"] for row in report["metrics"]}
    return out
