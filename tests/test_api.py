"""The Python API: RealismScorer.from_cohorts on DataFrames, Judge.load refusing a judge without its prompt."""

from pathlib import Path

import pandas as pd
import pytest

from ehrjudge import Judge, RealismScorer
from ehrjudge.cohort.schema import Cohort
from ehrjudge.errors import InputError
from ehrjudge.scoring.realism import ScoreConfig, score_records

FIXTURE = Path(__file__).parent / "fixtures" / "seed_score"


def test_realism_scorer_from_cohorts_scores_a_dataframe_like_score_records():
    # Setup: a records file with extra metadata columns, as a dataset split has
    records = pd.read_csv(FIXTURE / "synthetic.csv", dtype={"record_id": str})
    reference, holdout = Cohort.load(FIXTURE / "reference"), Cohort.load(FIXTURE / "holdout")
    # Run
    scores = RealismScorer.from_cohorts(FIXTURE / "reference", FIXTURE / "holdout").score(records)
    expected = score_records(reference, records.drop(columns=["generator", "strength"]), ScoreConfig(), holdout)
    # Assert
    pd.testing.assert_frame_equal(scores, expected)
    assert scores.columns[0] == "record_id" and "caps" in scores.columns


def test_judge_load_refuses_a_folder_without_its_prompt(tmp_path):
    # Setup
    folder = tmp_path / "judge"
    folder.mkdir()
    # Run / Assert
    with pytest.raises(InputError, match="records no prompt"):
        Judge.load(folder, reference=FIXTURE / "reference")
    with pytest.raises(InputError, match="not found"):
        Judge.load(tmp_path / "missing", reference=FIXTURE / "reference")
