"""The `findings` record text: the hardened score's record checks, built from marginal reference statistics only,
shown in words; the same checks whether fitted on the cohort or read back from a saved statistics file."""

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from ehrjudge.cohort.reference_stats import ReferenceStats
from ehrjudge.cohort.schema import Cohort
from ehrjudge.cohort.text import record_to_text
from ehrjudge.errors import InputError
from ehrjudge.judge.findings import finding_lines
from ehrjudge.scoring.hardened.checks import RecordChecks
from ehrjudge.scoring.realism import RealismScorer, ScoreConfig

FIXTURE = Path(__file__).parent / "fixtures" / "seed_score"
CHECK_COLUMNS = ["n_invalid", "n_unusual", "invalid_columns", "rubric_pass", "rule_violations", "sparsity_z"]


@pytest.fixture(scope="module")
def cohort():
    return Cohort.load(FIXTURE / "reference"), Cohort.load(FIXTURE / "holdout")


def frame_of(cohort: Cohort, rows: np.ndarray) -> pd.DataFrame:
    frame = pd.DataFrame(rows, columns=cohort.schema.names)
    frame.insert(0, "record_id", [f"r{i}" for i in range(len(rows))])
    return frame


def test_saved_statistics_give_the_scorers_own_checks(cohort, tmp_path):
    """RecordChecks from a saved-and-loaded reference_stats.json returns exactly what the hardened score writes."""
    # Setup: the holdout plus a noisy, a fractional and an all-zero record, scored by the hardened scorer
    reference, holdout = cohort
    rng = np.random.default_rng(0)
    records = np.vstack([holdout.matrix(), holdout.matrix()[:5] + rng.normal(0, 3, (5, holdout.matrix().shape[1])),
                         np.zeros((1, holdout.matrix().shape[1]))])
    scored = RealismScorer(ScoreConfig(), reference.schema).fit(reference.matrix(), holdout.matrix()).score(records)
    ReferenceStats.from_cohort(reference).save(tmp_path / "stats.json")
    # Run
    checks = RecordChecks(ScoreConfig(), reference.schema, ReferenceStats.load(tmp_path / "stats.json")).check(records)
    # Assert: identical, value for value
    for column in CHECK_COLUMNS:
        np.testing.assert_array_equal(np.asarray(checks[column]), scored[column].to_numpy(), err_msg=column)
    assert scored["n_invalid"].iloc[-6:].sum() > 0  # the noisy records do break domains: the test compares something


def test_statistics_hold_no_patient_row(cohort, tmp_path):
    """Only per-column and per-table summaries are written: no list as long as the reference."""
    reference, _ = cohort
    ReferenceStats.from_cohort(reference).save(tmp_path / "stats.json")
    data = json.loads((tmp_path / "stats.json").read_text())
    p = len(reference.schema.names)
    assert all(len(data[key]) == p for key in ("names", "mean", "std", "minimum", "maximum", "floor_share"))
    for table in data["code_counts"].values():
        assert sum(table["patients"]) == len(reference)  # a histogram over the reference, not its rows
        assert len(table["levels"]) < len(reference)


def test_older_statistics_without_domains_are_refused_by_findings(cohort, tmp_path):
    reference, _ = cohort
    stats = ReferenceStats.from_cohort(reference)
    (tmp_path / "old.json").write_text(json.dumps({"names": list(stats.names), "mean": stats.mean.tolist(),
                                                   "std": stats.std.tolist()}))
    old = ReferenceStats.load(tmp_path / "old.json")
    assert not old.has_domains
    with pytest.raises(InputError, match="no value domains"):
        finding_lines(frame_of(reference, reference.matrix()[:1]), reference.schema, old)


def test_finding_lines_known_answers(cohort):
    # Setup: a real held-out patient (clean), the same as a man with a pregnancy code, and with a fractional count
    reference, holdout = cohort
    names = reference.schema.names
    stats = ReferenceStats.from_cohort(reference)
    checks = RecordChecks(ScoreConfig(), reference.schema, stats)
    clean_rows = holdout.matrix()[checks.check(holdout.matrix())["rule_violations"] == ""]
    clean = clean_rows[0].copy()
    pregnant_man = clean.copy()
    pregnant_man[names.index("gender")] = 1.0
    pregnant_man[names.index("dx_icd10_z34")] = 1.0
    pregnant_man[names.index("diagnoses_count")] += 1.0
    fractional = clean.copy()
    fractional[names.index("admissions_count")] = 2.5
    # Run
    lines = finding_lines(frame_of(reference, np.vstack([clean, pregnant_man, fractional])), reference.schema, stats)
    # Assert
    assert lines[0][2] == "Rules broken: none"
    assert lines[0][0] == "Invalid values: none"
    assert lines[0][3].startswith("Codes per table: diagnoses ")
    assert lines[1][2].startswith("Rules broken: 1 essential (male with pregnancy code)")
    assert lines[2][0] == "Invalid values: 1 (Admissions count)"


def test_findings_text_keeps_its_check_lines_when_truncated(cohort):
    reference, _ = cohort
    stats = ReferenceStats.from_cohort(reference)
    row = reference.vectors.iloc[0]
    lines = finding_lines(reference.vectors.iloc[:1], reference.schema, stats)[0]
    full = record_to_text(row.to_dict(), reference.schema, fmt="findings", reference=stats, findings=lines)
    short = record_to_text(row.to_dict(), reference.schema, fmt="findings", reference=stats, findings=lines,
                           max_tokens=len(full.split()) - 3, count_tokens=lambda text: len(text.split()))
    assert all(line in full.splitlines() and line in short.splitlines() for line in lines)
    assert len(short.splitlines()) < len(full.splitlines())  # deviation items went, the checks stayed
    with pytest.raises(InputError, match="findings"):
        record_to_text(row.to_dict(), reference.schema, fmt="findings", reference=stats)
    with pytest.raises(InputError, match="findings"):
        record_to_text(row.to_dict(), reference.schema, fmt="deviations", reference=stats, findings=lines)


def test_findings_name_a_non_finite_value(cohort):
    reference, _ = cohort
    frame = frame_of(reference, reference.matrix()[:2])
    frame.loc[1, "age"] = np.nan
    with pytest.raises(InputError, match="age"):
        finding_lines(frame, reference.schema, ReferenceStats.from_cohort(reference))


def test_findings_of_a_schema_without_code_columns():
    """No code column: no sparsity check, and the codes line says so (the tiny training schema is such a one)."""
    from ehrjudge.cohort.schema import FeatureSpec, Schema

    schema = Schema(features=[FeatureSpec("gender", "demographics", "binary", "sex"),
                              FeatureSpec("age", "demographics", "continuous", "age")])
    reference = pd.DataFrame({"gender": [0.0, 1.0, 1.0, 0.0], "age": [30.0, 40.0, 50.0, 60.0]})
    stats = ReferenceStats.from_matrix(schema, reference.to_numpy())
    lines = finding_lines(pd.DataFrame({"gender": [0.5], "age": [45.0]}), schema, stats)[0]
    assert lines[0] == "Invalid values: 1 (sex)" and lines[3] == "Codes per table: no code columns"


def test_statistics_with_broken_domains_name_the_file(cohort, tmp_path):
    """A reference_stats.json whose value domains are cut short or unreadable is refused naming the file."""
    reference, _ = cohort
    ReferenceStats.from_cohort(reference).save(tmp_path / "stats.json")
    data = json.loads((tmp_path / "stats.json").read_text())
    short = dict(data, minimum=data["minimum"][:-1])
    (tmp_path / "short.json").write_text(json.dumps(short))
    with pytest.raises(InputError, match="short.json") as error:
        ReferenceStats.load(tmp_path / "short.json")
    assert "value domains" in str(error.value)
    broken = dict(data, code_counts={"diagnoses": {"levels": [0.0]}})  # no patients, no std
    (tmp_path / "broken.json").write_text(json.dumps(broken))
    with pytest.raises(InputError, match="broken.json"):
        ReferenceStats.load(tmp_path / "broken.json")
