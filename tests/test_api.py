"""The Python API: RealismScorer.from_cohorts on DataFrames, Judge.load refusing a judge without its prompt."""

from pathlib import Path

import pandas as pd
import pytest

from ehrjudge import Judge, RealismScorer
from ehrjudge.cohort.schema import Cohort
from ehrjudge.errors import ConfigError, InputError
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


def test_readme_python_api_example_runs_verbatim(tiny_trained_judge, tmp_path, monkeypatch, capsys):
    # Setup: a runs/default laid out as `ehrjudge run` writes it, holding the tiny trained judge
    import re
    import shutil

    run = tmp_path / "runs" / "default"
    shutil.copytree(tiny_trained_judge / "dataset", run / "dataset")  # reference/ and holdout/ as a run's
    shutil.copytree(tiny_trained_judge / "run" / "best", run / "judge")
    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    example = re.search(r"## Python API\n\n```python\n(.*?)```", readme, re.S).group(1)
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    # Run
    exec(example, namespace)
    # Assert: the verifiable score as score_records computes it, the judge as loaded from where it was trained
    records, truth, judged = namespace["records"], namespace["truth"], namespace["judged"]
    expected_truth = score_records(Cohort.load(run / "dataset" / "reference"),
                                   records.drop(columns=["generator", "strength", "realism_score"]), ScoreConfig(),
                                   Cohort.load(run / "dataset" / "holdout"))
    pd.testing.assert_frame_equal(truth, expected_truth)
    pd.testing.assert_frame_equal(judged, Judge.load(tiny_trained_judge / "run" / "best").score(records))
    assert judged.columns.tolist()[:3] == ["record_id", "judge_score", "expected_score"]
    assert "realism_score" in capsys.readouterr().out


def test_realism_scorer_definition_selects_the_seed_score():
    # Setup
    records = pd.read_csv(FIXTURE / "synthetic.csv", dtype={"record_id": str})
    reference, holdout = Cohort.load(FIXTURE / "reference"), Cohort.load(FIXTURE / "holdout")
    # Run
    seed = RealismScorer.from_cohorts(FIXTURE / "reference", FIXTURE / "holdout", definition="seed").score(records)
    # Assert
    expected = score_records(reference, records.drop(columns=["generator", "strength"]),
                             ScoreConfig(definition="seed"), holdout)
    pd.testing.assert_frame_equal(seed, expected)
    assert "caps" not in seed.columns
    with pytest.raises(ConfigError, match="definition"):
        RealismScorer.from_cohorts(FIXTURE / "reference", definition="sead")


def test_a_findings_dcr_judge_reads_the_patients_it_is_given(tmp_path):
    """A judge of the findings_dcr text is refused without patients (its folder stores none), named by its format;
    given reference and holdout cohort folders it reads statistics with the patients attached."""
    import json

    from ehrjudge.judge.artifact import read_judge

    # Setup: a judge folder whose description records the findings_dcr prompt and no dataset
    folder = tmp_path / "judge"
    folder.mkdir()
    (folder / "ehrjudge.json").write_text(json.dumps({"prompt": {"record_format": "findings_dcr"}}))
    # Run / Assert
    with pytest.raises(InputError, match="'findings_dcr' text, which needs the reference patients"):
        Judge.load(folder)
    saved = read_judge(folder, reference=FIXTURE / "reference", holdout=FIXTURE / "holdout")
    assert saved.reference.patients is not None and saved.prompt.record_format == "findings_dcr"
