"""The rewards a generator can be tuned against, each a 1..10 score per parsed record (higher = more realistic).

    judge    E_pi[k] = sum_k k pi(k | prompt(record)), the trained judge's expected label (api.Judge); for a judge
             that reads the cap line, min(E, cap) (its capped_score: the judge cannot pay above the cap it is shown)
    score    realism_continuous of the verifiable score, hardened definition (scoring/hardened)
    formula  the diagonal-z formula, -log sqrt(sum_j z_j^2) over the reference statistics, put on 1..10 by the
             judge dataset's val split when the reference folder sits in one (judge/baseline_scorers.py);
             otherwise the raw -log d (a valid ranking for group-normalized advantages, but not on the 1..10
             scale, so its hacking gap is not reported)

A completion that does not parse gets TuneConfig.parse_failure_reward under every reward (and 1 as its
verifiable score), so the policy cannot escape a reward by writing something that is not a record.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd

from ehrjudge.cohort.schema import Cohort
from ehrjudge.errors import InputError


@dataclasses.dataclass
class RewardFunction:
    name: str
    score: Callable[[pd.DataFrame], np.ndarray]  # records (record_id + schema columns) -> (n,) rewards
    on_score_scale: bool  # the reward is on the verifiable score's 1..10 scale (the hacking gap is defined)


def verifiable_scorers(reference: Cohort, holdout: Cohort | None) -> dict:
    """{"hardened": ..., "seed": ...}: the verifiable score under both definitions, fitted once."""
    from ehrjudge.scoring.realism import ScoreConfig, fit_scorer

    return {definition: fit_scorer(reference, ScoreConfig(definition=definition), holdout)
            for definition in ("hardened", "seed")}


def _formula(reference_dir: Path, reference: Cohort) -> RewardFunction:
    from ehrjudge.cohort.reference_stats import ReferenceStats
    from ehrjudge.judge.baseline_scorers import FormulaScorer, diagonal_z_distance, formula_raw_score, load_split

    stats = ReferenceStats.from_cohort(reference)
    dataset = reference_dir.parent
    if (dataset / "val.parquet").exists():
        records, targets = load_split(dataset, "val", reference.schema)
        scorer = FormulaScorer.fit(stats, records[reference.schema.names].to_numpy(dtype=np.float64), targets)
        if scorer.calibration is not None:
            return RewardFunction("formula", lambda r: scorer.score(r[reference.schema.names].to_numpy()), True)
    return RewardFunction("formula", lambda r: formula_raw_score(
        diagonal_z_distance(r[reference.schema.names].to_numpy(dtype=np.float64), stats)), False)


def build_reward(name: str, reference_dir: Path, reference: Cohort, verifiable: dict,
                 judge=None) -> RewardFunction | None:
    """The reward `name` (None for `none`); `judge` is a loaded api.Judge (reward judge)."""
    if name == "none":
        return None
    if name == "score":
        hardened = verifiable["hardened"]
        return RewardFunction("score", lambda r: hardened.score(r)["realism_continuous"].to_numpy(), True)
    if name == "formula":
        return _formula(Path(reference_dir), reference)
    if name == "judge":
        if judge is None:
            raise InputError("reward judge needs a trained judge: pass --judge DIR")
        from ehrjudge.judge.scoring import judge_score  # capped where the judge reads a cap line

        return RewardFunction("judge", lambda r: judge_score(judge.score(r)), True)
    raise InputError(f"unknown reward {name!r}")
