"""The Python API: a trained judge and the verifiable realism score, each loaded once and scoring DataFrames.

    from ehrjudge import Judge, RealismScorer
    truth = RealismScorer.from_cohorts("runs/default/dataset/reference", "runs/default/dataset/holdout").score(records)
    judged = Judge.load("runs/default/train/judge", reference="runs/default/dataset/reference").score(records)

`records` is a DataFrame with the reference schema's columns (and, optionally, record_id; other metadata or score
columns are ignored). A trained judge reads the prompt it was trained with (saved beside it); a folder without a saved
prompt is refused unless `prompt=` is given, so no judge silently scores with a prompt it never saw.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pandas as pd

from ehrjudge.cohort.schema import META_COLUMNS, Cohort, Schema, validate_vectors
from ehrjudge.errors import InputError
from ehrjudge.scoring.realism import RealismScorer, ScoreConfig, fit_scorer


def _records(records: pd.DataFrame, schema: Schema) -> pd.DataFrame:
    """record_id + the schema's columns, validated; other columns (generator, scores, ...) dropped."""
    if not isinstance(records, pd.DataFrame):
        raise InputError(f"records must be a pandas DataFrame with the schema's columns, got {type(records).__name__}")
    frame = records.copy()
    if "record_id" not in frame.columns:
        frame.insert(0, "record_id", [f"r{i}" for i in range(len(frame))])
    kept = [c for c in frame.columns if c in META_COLUMNS] + [n for n in schema.names if n in frame.columns]
    return validate_vectors(frame[kept], schema)


def score_frame(scorer: RealismScorer, records: pd.DataFrame) -> pd.DataFrame:
    """record_id then the score columns, for a fitted scorer that knows its schema."""
    frame = _records(records, scorer.schema)
    scores = scorer.score(frame[scorer.schema.names].to_numpy(dtype=np.float64))
    scores.insert(0, "record_id", frame["record_id"].to_numpy())
    return scores


def scorer_from_cohorts(reference, holdout=None, config: ScoreConfig | None = None) -> RealismScorer:
    """A RealismScorer fitted on a reference cohort (a folder or a Cohort), calibrated on `holdout` when given."""
    reference = reference if isinstance(reference, Cohort) else Cohort.load(reference)
    holdout = holdout if holdout is None or isinstance(holdout, Cohort) else Cohort.load(holdout)
    return fit_scorer(reference, config, holdout)


@dataclasses.dataclass
class Judge:
    """A trained (or zero-shot) LLM judge with its prompt, reference statistics and calibration."""

    model: object
    tokenizer: object
    schema: Schema
    prompt: object  # judge.prompt.PromptConfig
    reference: object  # cohort.reference_stats.ReferenceStats
    calibration: object | None = None  # judge.calibration.Calibration
    batch_size: int = 8

    @classmethod
    def load(cls, path, reference, prompt=None, device: str = "auto", dtype: str = "auto",
             batch_size: int = 8) -> "Judge":
        """The judge in folder `path` (ehrjudge run's train/judge, ehrjudge train's best/ or final/); `reference` is
        the reference cohort folder whose statistics the prompt shows (a judge dataset's reference/)."""
        from ehrjudge.cohort.reference_stats import ReferenceStats
        from ehrjudge.judge.calibration import saved_calibration
        from ehrjudge.judge.model import load_judge
        from ehrjudge.judge.prompt import saved_prompt

        path = Path(path)
        if not path.is_dir():
            raise InputError("judge folder not found", file=path)
        prompt = prompt or saved_prompt(path)
        if prompt is None:
            raise InputError("the judge folder records no prompt (ehrjudge.json or the training config.yaml); pass "
                             "prompt= explicitly", file=path)
        model, tokenizer = load_judge(str(path), device, dtype)
        stats = ReferenceStats.from_dir(reference)
        return cls(model, tokenizer, Schema.load(Path(reference) / "schema.json"), prompt, stats,
                   saved_calibration(path), batch_size)

    def score(self, records: pd.DataFrame) -> pd.DataFrame:
        """record_id, judge_score, expected_score, calibrated_score (when the judge saved a calibration), entropy,
        p_1..p_10 per record, in input order."""
        from ehrjudge.judge.scoring import judge_records

        frame = _records(records, self.schema)
        scores = judge_records(self.model, self.tokenizer, frame, self.schema, self.prompt, self.batch_size,
                               reference=self.reference)
        if self.calibration is not None:
            scores.insert(3, "calibrated_score", self.calibration(scores["expected_score"].to_numpy()))
        return scores
