"""benchmarks/cross_cohort.py's scoring: a judge of one schema scores a dataset of another with that dataset's
schema and reference statistics, and the formula is fitted on that dataset's own reference and val split."""

import dataclasses
import importlib.util
from pathlib import Path

import numpy as np
import pandas as pd

from ehrjudge.api import Judge
from ehrjudge.cohort.reference_stats import ReferenceStats
from ehrjudge.cohort.schema import Cohort, FeatureSpec
from ehrjudge.judge.agreement import agreement
from ehrjudge.judge.baseline_scorers import FormulaScorer, load_split
from ehrjudge.judge.tiny import tiny_judge
from ehrjudge.train.tiny import TINY_PROMPT, tiny_dataset

SCRIPT = Path(__file__).resolve().parent.parent / "benchmarks" / "cross_cohort.py"
EXTRA = FeatureSpec("lab_x_mean", "labs", "continuous", "lab x")


def load_benchmark():
    spec = importlib.util.spec_from_file_location("cross_cohort", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def with_extra_column(dataset: Path, seed: int) -> Path:
    """The tiny dataset with one more continuous column (so its schema differs), in place."""
    rng = np.random.default_rng(seed)
    reference = Cohort.load(dataset / "reference")
    vectors = reference.vectors.assign(**{EXTRA.name: rng.normal(5, 2, len(reference.vectors))})
    schema = dataclasses.replace(reference.schema, features=reference.schema.features + [EXTRA])
    Cohort(vectors=vectors, schema=schema).save(dataset / "reference")
    for split in ("train", "val", "test", "test_unseen"):
        frame = pd.read_parquet(dataset / f"{split}.parquet")
        frame[EXTRA.name] = rng.normal(5, 2, len(frame)) + 4 * (frame["realism_score"] < 5)  # bad ones drift
        frame.to_parquet(dataset / f"{split}.parquet")
    return dataset


def test_a_judge_of_one_schema_scores_another_with_its_reference(tmp_path, one_torch_thread):
    # Setup: a tiny judge built on dataset A; dataset B has one column more
    first = tiny_dataset(tmp_path / "first", n_train=8, n_eval=12, seed=0)
    second = with_extra_column(tiny_dataset(tmp_path / "second", n_train=8, n_eval=12, seed=1), seed=2)
    model, tokenizer = tiny_judge(seed=0)
    first_cohort = Cohort.load(first / "reference")
    judge = Judge(model, tokenizer, first_cohort.schema, dataclasses.replace(TINY_PROMPT, record_format="deviations"),
                  ReferenceStats.from_cohort(first_cohort))
    second_cohort = Cohort.load(second / "reference")
    second_stats = ReferenceStats.from_cohort(second_cohort)
    records, true = load_split(second, "test", second_cohort.schema)
    # Run
    result = load_benchmark().cross_cohort_scores(judge, second, n_bootstrap=50)
    # Assert: the judge read B's columns against B's statistics, not A's
    as_second = dataclasses.replace(judge, schema=second_cohort.schema, reference=second_stats).score(records)
    as_first = judge.score(records)
    assert result["judge"]["spearman"] == agreement(as_second["expected_score"], true, 0, 50)["spearman"]
    assert not np.allclose(as_second["expected_score"], as_first["expected_score"])
    # the formula: B's statistics (the drifting extra column included), its 1..10 map fitted on B's val split
    val, val_true = load_split(second, "val", second_cohort.schema)
    formula = FormulaScorer.fit(second_stats, val[second_cohort.schema.names].to_numpy(), val_true)
    expected = agreement(formula.score(records[second_cohort.schema.names].to_numpy()), true, 0, 50)
    assert result["formula"]["spearman"] == expected["spearman"] and result["formula"]["spearman"] > 0.5
    assert result["judge"]["n"] == result["formula"]["n"] == len(records)
