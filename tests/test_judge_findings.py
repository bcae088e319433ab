"""The `findings` record text: the hardened score's record checks, built from marginal reference statistics only,
shown in words; the same checks whether fitted on the cohort or read back from a saved statistics file. The
`findings_dcr` text adds the privacy input (distance to the closest reference patient over the held-out near-copy
distance), computed in one place (scoring/hardened/privacy.py) for the scorer and the text."""

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
from ehrjudge.judge.reference import cohort_reference, reference_for
from ehrjudge.scoring.hardened.checks import RecordChecks
from ehrjudge.scoring.hardened.privacy import ClosestPatient
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


# The findings_dcr text

def test_closest_patient_known_answer():
    """Reference (0,0), (3,0), (0,4) (column std 1.414 and 1.886); held-out DCRs in z units give the threshold."""
    # Setup
    reference = np.array([[0.0, 0.0], [3.0, 0.0], [0.0, 4.0]])
    scale = reference.std(axis=0)  # ddof 0
    calibration = np.array([[0.0, 1.0], [3.0, 2.0], [1.5, 0.0]])
    # Run
    closest = ClosestPatient(percentile=50.0).fit(reference, calibration)
    # Assert: DCRs by hand in z-scores
    expected_holdout = sorted([1.0 / scale[1], 2.0 / scale[1], 1.5 / scale[0]])
    np.testing.assert_allclose(closest.holdout_dcr_, expected_holdout, rtol=1e-12)
    assert closest.threshold_ == pytest.approx(expected_holdout[1])
    ratio = closest.ratio(np.array([[3.0, 0.0], [0.0, 8.0]]))
    np.testing.assert_allclose(ratio, [0.0, (4.0 / scale[1]) / expected_holdout[1]], rtol=1e-12)
    np.testing.assert_array_equal(closest.nearest(np.array([[2.9, 0.1]]))[1], [1])


def _edited_brute_force(closest, records, free_cells):
    """DCR over all but the free_cells largest cell differences, minimum over every reference patient."""
    z, z_ref = closest.standardize(records), closest.knn_.reference
    squared = np.sort((z[:, None, :] - z_ref[None, :, :]) ** 2, axis=2)[:, :, :z.shape[1] - free_cells]
    return np.sqrt(squared.sum(axis=2)).min(axis=1)


def test_edited_copy_known_answer():
    """free_cells = 1: a copy edited in one cell has ratio 0; edited in two, the plain ratio. Each threshold is its
    own distance's held-out percentile."""
    # Setup
    rng = np.random.default_rng(0)
    reference, calibration = rng.normal(size=(60, 24)), rng.normal(size=(40, 24))
    one_edit, two_edits = reference[[3]].copy(), reference[[3]].copy()
    one_edit[0, 7] += 50.0
    two_edits[0, [7, 9]] += 50.0
    # Run
    plain = ClosestPatient(percentile=5.0).fit(reference, calibration)
    edited = ClosestPatient(percentile=5.0, free_cells=1).fit(reference, calibration)
    # Assert
    assert edited.threshold_ == plain.threshold_ and plain.edited_threshold_ is None
    assert edited.edited_threshold_ == pytest.approx(np.percentile(_edited_brute_force(edited, calibration, 1), 5.0))
    found = edited.copy_ratio(one_edit)
    assert plain.ratio(one_edit)[0] > 1 and found["ratio"][0] == 0.0 and found["edited"][0] == 0.0
    by_hand = np.sqrt((((one_edit - reference) / reference.std(axis=0)) ** 2).sum(axis=1))  # the plain DCR
    assert found["dcr"][0] == pytest.approx(by_hand.min(), rel=1e-9) and found["nearest"][0] == by_hand.argmin()
    np.testing.assert_array_equal(edited.ratio(two_edits), plain.ratio(two_edits))  # 2 cells differ: not a copy
    with pytest.raises(InputError, match="free_cells"):
        ClosestPatient(free_cells=-1)


def test_edited_copy_settings_and_holdouts_that_cannot_calibrate_are_refused():
    """A negative free_cells is refused by name; a holdout whose every patient copies a reference patient cannot set
    a near-copy distance, and the error says what the holdout must hold."""
    from ehrjudge.errors import ConfigError

    with pytest.raises(ConfigError, match="near_copy_free_cells"):
        ScoreConfig(near_copy_free_cells=-1)
    reference = np.random.default_rng(0).normal(size=(20, 8))
    with pytest.raises(InputError, match="holdout must hold other patients"):
        ClosestPatient(free_cells=1).fit(reference, reference[:5].copy())


@pytest.mark.parametrize("free_cells", [1, 2])
def test_edited_copy_search_matches_brute_force(free_cells):
    """The block screen (pigeonhole) finds every reference patient within the radius on all but t cells: DCR_t
    equals a brute-force minimum over all pairs wherever that is <= the radius, +inf elsewhere."""
    rng = np.random.default_rng(free_cells)
    reference, calibration = rng.normal(size=(60, 24)), rng.normal(size=(40, 24))
    copies = reference[rng.choice(60, 30)] + rng.normal(0, 0.05, size=(30, 24))  # near copies...
    for row in copies:  # ...edited in up to t + 1 cells by a lot
        row[rng.choice(24, rng.integers(0, free_cells + 2), replace=False)] += 25.0
    records = np.vstack([copies, calibration, rng.normal(size=(30, 24))])
    closest = ClosestPatient(percentile=5.0, chunk_size=7, free_cells=free_cells).fit(reference, calibration)
    # Run
    found = closest.edited_distance(records, closest.threshold_)
    # Assert
    brute = _edited_brute_force(closest, records, free_cells)
    inside = brute <= closest.threshold_
    assert inside.sum() >= 20 and (~inside).sum() >= 10
    np.testing.assert_allclose(found[inside], brute[inside], rtol=1e-9, atol=1e-12)
    assert np.isinf(found[~inside]).all()


def test_scorer_privacy_cap_is_the_texts_ratio(cohort):
    """privacy_cap = 1 + 9 min(1, ratio), ratio from the very ClosestPatient the text reads."""
    reference, holdout = cohort
    rng = np.random.default_rng(1)
    records = np.vstack([reference.matrix()[:4], reference.matrix()[:4] + rng.normal(0, 0.01, (4, len(reference.schema.names))),
                         holdout.matrix()])
    scorer = RealismScorer(ScoreConfig(), reference.schema).fit(reference.matrix(), holdout.matrix())
    scored = scorer.score(records)
    stats = cohort_reference(reference, holdout, ScoreConfig())
    np.testing.assert_array_equal(1.0 + 9.0 * np.minimum(1.0, stats.patients.ratio(records)), scored["privacy_cap"])
    assert scored["exact_copy"].iloc[:4].all()


def test_findings_dcr_lines_name_copies(cohort):
    """An exact copy reads 'identical', a tiny move 'near copy', a held-out patient 'times the near-copy distance'
    (the distances' lines: record linkage off here, its line in tests/test_scoring_linkage.py)."""
    # Setup: one copy, one copy moved by 1e-3 of a SD, one held-out patient beyond the threshold
    reference, holdout = cohort
    stats = cohort_reference(reference, holdout, ScoreConfig(near_copy_percentile=5.0, near_copy_linkage_percentile=0))
    ratios = stats.patients.ratio(holdout.matrix())
    far = holdout.matrix()[int(np.argmax(ratios))]
    moved = reference.matrix()[1] + 1e-3 * stats.std
    rows = np.vstack([reference.matrix()[0], moved, far])
    # Run
    lines = finding_lines(frame_of(reference, rows), reference.schema, stats, closest=True)
    # Assert
    closest = [line[-1] for line in lines]
    assert closest[0] == "Closest reference patient: identical (a copy)"
    assert closest[1].endswith("of the near-copy distance (a near copy)")
    assert closest[2].endswith("times the near-copy distance") and ratios.max() >= 1
    edited = reference.matrix()[2].copy()
    moved_cells = np.argsort(stats.std)[-3:]  # three cells moved 50 SD: a copy with three edits (free_cells 3)
    edited[moved_cells] += 50.0 * stats.std[moved_cells]
    assert finding_lines(frame_of(reference, edited[None]), reference.schema, stats, closest=True)[0][-1] == (
        "Closest reference patient: identical but for at most 3 values (a copy)")
    assert len(finding_lines(frame_of(reference, rows), reference.schema, stats)[0]) == len(lines[0]) - 1


def test_findings_dcr_needs_the_patients(cohort, tmp_path):
    """Statistics without patients (what a judge folder holds) are refused by name; so is a missing holdout."""
    reference, holdout = cohort
    with pytest.raises(InputError, match="findings_dcr"):
        finding_lines(frame_of(reference, reference.matrix()[:1]), reference.schema,
                      ReferenceStats.from_cohort(reference), closest=True)
    with pytest.raises(InputError, match="held-out real patients") as error:
        reference_for(FIXTURE / "reference", "findings_dcr", tmp_path / "nowhere")
    assert "nowhere" in str(error.value)
    stats = reference_for(FIXTURE / "reference", "findings_dcr", FIXTURE / "holdout")
    assert stats.patients is not None and reference_for(FIXTURE / "reference", "findings").patients is None


def test_saved_statistics_never_hold_the_patients(cohort, tmp_path):
    """Attaching the patients changes nothing that is saved: the file is the one written without them."""
    reference, holdout = cohort
    ReferenceStats.from_cohort(reference).save(tmp_path / "plain.json")
    cohort_reference(reference, holdout, ScoreConfig(near_copy_percentile=5.0)).save(tmp_path / "with.json")
    assert json.loads((tmp_path / "plain.json").read_text()) == json.loads((tmp_path / "with.json").read_text())


def test_show_prints_the_closest_patient_line(cohort, tmp_path):
    """`ehrjudge show --format findings_dcr --holdout DIR` prints the privacy line; without a holdout it is refused
    naming the folder it looked for."""
    from typer.testing import CliRunner

    from ehrjudge.cli import app

    # Setup: a reference patient, shown against its own cohort (an exact copy of itself); the cohort copied to a
    # folder not named reference/, so no dataset's holdout/ sits beside it
    import shutil

    reference, _ = cohort
    shutil.copytree(FIXTURE / "reference", tmp_path / "cohort")
    record = str(reference.ids[0])
    command = ["show", "--cohort", str(tmp_path / "cohort"), "--record", record, "--format", "findings_dcr"]
    # Run
    shown = CliRunner().invoke(app, [*command, "--holdout", str(FIXTURE / "holdout")])
    refused = CliRunner().invoke(app, command)
    # Assert
    assert shown.exit_code == 0, shown.output
    assert "Closest reference patient: identical (a copy)" in shown.output.splitlines()
    assert isinstance(refused.exception, InputError) and "held-out real patients" in str(refused.exception)
    assert "cohort" in str(refused.exception)  # the folder it looked beside


def test_cap_line_is_the_hardened_scores_lowest_cap(cohort):
    """'Score cap: X (reasons)' is min(privacy_cap, invalid_cap if invalid, essential_cap if essential broken), the
    hardened scorer's own caps, with the reasons that reach it; 'Score cap: none' when none applies."""
    # Setup: a clean held-out patient, a pregnant man (essential rule), a fractional count (invalid), an exact copy,
    # a copy moved by a tenth of the near-copy distance
    reference, holdout = cohort
    names = reference.schema.names
    stats = cohort_reference(reference, holdout, ScoreConfig())
    checks = RecordChecks(ScoreConfig(), reference.schema, stats)
    held = holdout.matrix()
    clean = held[(checks.check(held)["rule_violations"] == "") & (stats.patients.ratio(held) >= 1.0)
                 & (checks.check(held)["n_invalid"] == 0)][0]
    pregnant_man = clean.copy()
    pregnant_man[names.index("gender")] = 1.0
    pregnant_man[names.index("dx_icd10_z34")] = 1.0
    fractional = clean.copy()
    fractional[names.index("admissions_count")] = 2.5
    copy = reference.matrix()[0]
    rows = np.vstack([clean, pregnant_man, fractional, copy])
    scored = RealismScorer(ScoreConfig(), reference.schema).fit(reference.matrix(), held).score(rows)
    # Run
    caps = [line[-1] for line in finding_lines(frame_of(reference, rows), reference.schema, stats, closest=True,
                                               caps=True)]
    # Assert: the text's cap against the scorer's components
    assert caps[0] == "Score cap: none"
    assert caps[1] == "Score cap: 4 (essential rule broken)"
    assert caps[2] == "Score cap: 2 (invalid values)"
    assert caps[3] == "Score cap: 1 (near copy)"
    assert scored["privacy_cap"].iloc[3] == 1.0 and scored["n_invalid"].iloc[2] > 0 and scored["caps"].iloc[0] == ""
    assert (scored["realism_continuous"].to_numpy()[1:] <= [4.0, 2.0, 1.0]).all()  # the score obeys the text's caps
    # Without the patients (findings), no privacy cap; without caps=True, no cap line
    plain = finding_lines(frame_of(reference, rows), reference.schema, stats, caps=True)
    assert [line[-1] for line in plain][3] == "Score cap: none"
    assert not any(line[-1].startswith("Score cap") for line in finding_lines(frame_of(reference, rows),
                                                                               reference.schema, stats))


def _cap_rows(reference, holdout, stats):
    """A clean held-out patient, a pregnant man (essential rule), a fractional count (invalid), an exact copy."""
    names = reference.schema.names
    checks = RecordChecks(ScoreConfig(), reference.schema, stats)
    held = holdout.matrix()
    found = checks.check(held)
    clean = held[(found["rule_violations"] == "") & (stats.patients.ratio(held) >= 1.0)
                 & (found["n_invalid"] == 0)][0]
    pregnant_man, fractional = clean.copy(), clean.copy()
    pregnant_man[names.index("gender")] = 1.0
    pregnant_man[names.index("dx_icd10_z34")] = 1.0
    fractional[names.index("admissions_count")] = 2.5
    return np.vstack([clean, pregnant_man, fractional, reference.matrix()[0]])


def test_line_caps_are_the_numbers_the_cap_line_states(cohort):
    from ehrjudge.judge.findings import line_caps

    # Setup
    reference, holdout = cohort
    stats = cohort_reference(reference, holdout, ScoreConfig())
    frame = frame_of(reference, _cap_rows(reference, holdout, stats))
    # Run
    caps = line_caps(frame, reference.schema, stats, closest=True)
    lines = [line[-1] for line in finding_lines(frame, reference.schema, stats, closest=True, caps=True)]
    # Assert: 10 where the line says none, else the line's number; without the patients no privacy cap
    assert caps.tolist() == [10.0, 4.0, 2.0, 1.0]
    assert lines == ["Score cap: none", "Score cap: 4 (essential rule broken)", "Score cap: 2 (invalid values)",
                     "Score cap: 1 (near copy)"]
    assert line_caps(frame, reference.schema, stats).tolist() == [10.0, 4.0, 2.0, 10.0]


def test_capped_score_is_the_expected_score_under_the_line_cap(cohort):
    from ehrjudge.judge.prompt import PromptConfig
    from ehrjudge.judge.scoring import judge_score as judge_reward  # what tune-generator's judge reward calls
    from ehrjudge.judge.scoring import matrix_caps, record_caps, with_capped_score

    # Setup: a judge that pays 9 to every record, reading the findings_dcr text with and without the cap line
    reference, holdout = cohort
    stats = cohort_reference(reference, holdout, ScoreConfig())
    rows = _cap_rows(reference, holdout, stats)
    frame = frame_of(reference, rows)
    summary = pd.DataFrame({"judge_score": [9] * 4, "expected_score": [9.0, 3.0, 9.0, 9.0], "entropy": [0.1] * 4})
    with_line = PromptConfig(record_format="findings_dcr", show_caps=True)
    # Run
    capped = with_capped_score(summary.copy(), record_caps(frame, reference.schema, with_line, stats))
    plain = with_capped_score(summary.copy(), record_caps(frame, reference.schema,
                                                          PromptConfig(record_format="findings_dcr"), stats))
    # Assert: min(expected, cap) right after expected_score; no column, and the expected score as the reward, without
    # the line
    assert list(capped.columns) == ["judge_score", "expected_score", "capped_score", "entropy"]
    assert capped["capped_score"].tolist() == [9.0, 3.0, 2.0, 1.0]
    assert judge_reward(capped).tolist() == [9.0, 3.0, 2.0, 1.0]
    assert "capped_score" not in plain and judge_reward(plain).tolist() == [9.0, 3.0, 9.0, 9.0]
    assert matrix_caps(reference.schema, with_line, stats)(rows).tolist() == [10.0, 4.0, 2.0, 1.0]
    assert matrix_caps(reference.schema, PromptConfig(record_format="findings_dcr"), stats) is None


def test_probes_report_the_capped_judge_beside_the_judge(cohort):
    from ehrjudge.scoring.probes import run_probes

    # Setup: a judge that pays 9 to everything, capped by a cap of 2 on every record
    reference, holdout = cohort
    always_nine = lambda records: np.full(len(records), 9.0)  # noqa: E731
    # Run
    records, table = run_probes(reference, holdout, ScoreConfig(), 20, 0, {"judge": always_nine},
                                cap=lambda records: np.full(len(records), 2.0))
    # Assert: judge_capped = min(judge, cap) on every probe record and in the table
    assert (records["judge"] == 9.0).all() and (records["judge_capped"] == 2.0).all()
    assert (table["judge_mean"] == 9.0).all() and (table["judge_capped_mean"] == 2.0).all()


def test_cap_line_shows_a_continuous_privacy_cap():
    from ehrjudge.judge.findings import _cap_line

    assert _cap_line({"invalid values": None, "essential rule broken": None, "near copy": 4.78}) == \
        "Score cap: 4.8 (near copy)"
    assert _cap_line({"invalid values": 2.0, "essential rule broken": 4.0, "near copy": 1.9}) == \
        "Score cap: 1.9 (near copy)"
    assert _cap_line({"invalid values": 2.0, "essential rule broken": 2.0, "near copy": None}) == \
        "Score cap: 2 (invalid values, essential rule broken)"


def test_typicality_line_is_the_scorers_ratio(cohort):
    """'Distance from the reference centre: R times ...' shows the hardened scorer's typicality_ratio, from the very
    Typicality it reads; refused without the patients."""
    # Setup: held-out patients and the same records pushed far out (x3)
    reference, holdout = cohort
    records = np.vstack([holdout.matrix()[:5], 3.0 * holdout.matrix()[:5]])
    stats = cohort_reference(reference, holdout, ScoreConfig())
    scored = RealismScorer(ScoreConfig(), reference.schema).fit(reference.matrix(), holdout.matrix()).score(records)
    # Run
    lines = finding_lines(frame_of(reference, records), reference.schema, stats, typicality=True)
    # Assert: the first line carries the scorer's ratio at the shown precision
    np.testing.assert_array_equal(stats.typicality.ratio(records), scored["typicality_ratio"])
    for line, ratio in zip(lines, scored["typicality_ratio"]):
        shown = float(line[0].split(": ")[1].split(" times")[0])
        assert line[0].startswith("Distance from the reference centre: ")
        assert shown == pytest.approx(ratio, abs=0.051 if ratio < 10 else 0.51)
    assert all(float(a[0].split(": ")[1].split(" ")[0]) > float(b[0].split(": ")[1].split(" ")[0])
               for a, b in zip(lines[5:], lines[:5]))
    with pytest.raises(InputError, match="show_typicality"):
        finding_lines(frame_of(reference, records), reference.schema, ReferenceStats.from_cohort(reference),
                      typicality=True)


def test_finding_facts_are_the_lines_numbers(cohort):
    """finding_facts holds what the lines say: the invalid count, the rule counts per severity, the closest-patient
    ratio and the score cap (10 where the line says none), row for row."""
    from ehrjudge.judge.findings import SEVERITY_ORDER, finding_facts

    # Setup: a clean held-out patient, a pregnant man, a fractional count, an exact copy
    reference, holdout = cohort
    names = reference.schema.names
    stats = cohort_reference(reference, holdout, ScoreConfig())
    held = holdout.matrix()
    checks = RecordChecks(ScoreConfig(), reference.schema, stats)
    found = checks.check(held)
    clean = held[(found["rule_violations"] == "") & (found["n_invalid"] == 0) & (stats.patients.ratio(held) >= 1)][0]
    pregnant_man, fractional = clean.copy(), clean.copy()
    pregnant_man[names.index("gender")], pregnant_man[names.index("dx_icd10_z34")] = 1.0, 1.0
    fractional[names.index("admissions_count")] = 2.5
    rows = frame_of(reference, np.vstack([clean, pregnant_man, fractional, reference.matrix()[0]]))
    # Run
    facts = finding_facts(rows, reference.schema, stats, closest=True)
    lines = finding_lines(rows, reference.schema, stats, closest=True, caps=True)
    # Assert: one row per record; the last column is the cap line's value, the one before it the ratio
    assert facts.shape[0] == 4 and np.isfinite(facts).all()
    shown_caps = [10.0 if line[-1] == "Score cap: none" else float(line[-1].split()[2]) for line in lines]
    np.testing.assert_allclose(facts[:, -1], shown_caps, atol=0.05)
    np.testing.assert_allclose(facts[:, -2], stats.patients.ratio(rows[names].to_numpy()))
    tables = len(checks.groups)
    severity_block = facts[:, -(2 + 2 * tables + len(SEVERITY_ORDER)):-(2 + 2 * tables)]
    assert severity_block[0].sum() == 0 and severity_block[1][0] >= 1  # the pregnant man breaks an essential rule
    invalid = facts[:, -(2 + 2 * tables + len(SEVERITY_ORDER) + 2)]
    np.testing.assert_array_equal(invalid > 0, [False, False, True, False])
    # Without the patients: no ratio column, and the copy is no longer capped
    plain = finding_facts(rows, reference.schema, stats)
    assert plain.shape[1] == facts.shape[1] - 1 and plain[3, -1] == 10.0


def test_z_matrix_is_reference_stats_z_scores_row_by_row():
    from ehrjudge.judge.findings import _z_matrix

    # Setup: column b constant in the reference; records on it, off it, and beyond it
    stats = ReferenceStats(("a", "b", "c"), np.array([1.0, 5.0, 2.0]), np.array([1.0, 0.0, 2.0]))
    records = np.array([[3.0, 5.0, 2.0], [0.0, 6.0, 6.0], [1.0, 4.0, -2.0]])
    # Run
    z = _z_matrix(records, stats)
    # Assert
    expected = [[stats.z_scores(dict(zip(stats.names, row)))[name] for name in stats.names] for row in records]
    np.testing.assert_array_equal(z, expected)
    assert np.isposinf(z[1, 1]) and np.isneginf(z[2, 1]) and z[0, 1] == 0.0
