"""record_to_text: exact CSV and compact renderings, and the documented truncation order under a token budget."""

import pytest

from ehrjudge.cohort.featurize import DEMOGRAPHICS, aggregate_features
import numpy as np

from ehrjudge.cohort.reference_stats import ReferenceStats
from ehrjudge.cohort.schema import Cohort, FeatureSpec, Schema
from ehrjudge.cohort.text import format_value, record_to_text
from ehrjudge.errors import InputError

SCHEMA = Schema(features=DEMOGRAPHICS + aggregate_features("admissions") + aggregate_features("diagnoses") + [
    FeatureSpec("dx_icd10_e119", "diagnoses", "count", "Type 2 diabetes mellitus", code="ICD10:E119"),
    FeatureSpec("dx_icd10_i10", "diagnoses", "count", "Essential hypertension", code="ICD10:I10"),
    FeatureSpec("dx_icd10_j45", "diagnoses", "count", "Asthma", code="ICD10:J45"),
] + aggregate_features("labs") + [
    FeatureSpec("lab_50912", "labs", "count", "Creatinine", code="50912"),
])
RECORD = {
    "gender": 1, "age": 67, "is_dead": 0,
    "admissions_count": 2, "admissions_los_mean": 3.5, "admissions_los_sum": 7, "admissions_los_max": 5,
    "admissions_los_min": 2, "admissions_los_std": 2.1213203,
    "diagnoses_count": 3, "dx_icd10_e119": 2, "dx_icd10_i10": 1, "dx_icd10_j45": 0,
    "labs_count": 1, "labs_mean": 1.25, "labs_sum": 1.25, "labs_max": 1.25, "labs_min": 1.25, "labs_std": 0,
    "lab_50912": 1,
}
COMPACT = (
    "Demographics: male, age 67, alive\n"
    "Admissions: 2 (length of stay mean 3.5 d, sum 7 d, max 5 d, min 2 d, std 2.121 d)\n"
    "Diagnoses: 3 - Type 2 diabetes mellitus (E119) x2; Essential hypertension (I10) x1\n"
    "Labs: 1 (value mean 1.25, sum 1.25, max 1.25, min 1.25) - Creatinine (50912) x1"
)


def words(text: str) -> int:
    return len(text.split())


def test_csv_format_is_the_original_table():
    # Run
    text = record_to_text(RECORD, SCHEMA, fmt="csv", record_id="10000001")
    # Assert
    header, row = text.split("\n")
    assert header == ("SubjectID,Gender,Age,IsDead,Admissions_count,Admissions_los_mean,Admissions_los_sum,"
                      "Admissions_los_max,Admissions_los_min,Admissions_los_std,Diagnoses_count,Dx_icd10_e119,"
                      "Dx_icd10_i10,Dx_icd10_j45,Labs_count,Labs_mean,Labs_sum,Labs_max,Labs_min,Labs_std,Lab_50912")
    assert row == "10000001,1,67,0,2,3.5,7,5,2,2.121,3,2,1,0,1,1.25,1.25,1.25,1.25,0,1"


def test_compact_lists_non_zero_features_by_table():
    assert record_to_text(RECORD, SCHEMA) == COMPACT


def test_compact_female_deceased_without_events():
    # Setup
    record = {name: 0 for name in SCHEMA.names} | {"age": 80.5, "is_dead": 1}
    # Run / Assert
    assert record_to_text(record, SCHEMA) == "Demographics: female, age 80.5, died"


def test_budget_drops_least_informative_codes_first():
    # Setup: the full text has 53 words; 52 forces one drop (-4 words, +3 for the marker)
    assert words(COMPACT) == 53
    # Run
    text = record_to_text(RECORD, SCHEMA, max_tokens=52, count_tokens=words)
    # Assert: count-1 codes go before count-2 codes; ties by name (dx_icd10_i10 < lab_50912)
    assert text == COMPACT.replace("; Essential hypertension (I10) x1", "") + "\n(+1 more codes)"


def test_budget_then_drops_summaries_then_lines_never_demographics():
    # Run
    after_codes = record_to_text(RECORD, SCHEMA, max_tokens=35, count_tokens=words)
    tiny = record_to_text(RECORD, SCHEMA, max_tokens=1, count_tokens=words)
    # Assert
    # 53 words; without the 3 codes 40; without the labs summary 35 (labs are dropped before admissions)
    assert after_codes == ("Demographics: male, age 67, alive\n"
                           "Admissions: 2 (length of stay mean 3.5 d, sum 7 d, max 5 d, min 2 d, std 2.121 d)\n"
                           "Diagnoses: 3\nLabs: 1\n(+3 more codes; 1 summaries omitted)")
    assert tiny == "Demographics: male, age 67, alive\n(+3 more codes; 2 summaries omitted; 3 tables omitted)"
    assert record_to_text(RECORD, SCHEMA, max_tokens=35, count_tokens=words) == after_codes  # deterministic


def test_csv_budget_drops_zero_code_columns_first():
    # Run
    header_commas = lambda t: t.split("\n")[0].count(",")  # noqa: E731
    text = record_to_text(RECORD, SCHEMA, fmt="csv", max_tokens=19, count_tokens=header_commas)
    # Assert: 21 columns -> 20 commas; dropping the zero-valued J45 column (first in the order) leaves 19
    header, row, marker = text.split("\n")
    assert "Dx_icd10_j45" not in header and header.count(",") == 19
    assert marker == "(+1 more columns)"


def test_format_value_rules():
    assert [format_value(v) for v in (3.0, 2.5, 1234.56789, 0.012345, -0.0, 1e-7)] == \
        ["3", "2.5", "1234.568", "0.0123", "0", "1e-07"]


def test_bad_records_raise():
    with pytest.raises(InputError, match="not a finite number"):
        record_to_text(RECORD | {"age": float("nan")}, SCHEMA)
    with pytest.raises(InputError, match="lacks 1 schema feature"):
        record_to_text({k: v for k, v in RECORD.items() if k != "labs_std"}, SCHEMA)
    with pytest.raises(InputError, match="unknown text format"):
        record_to_text(RECORD, SCHEMA, fmt="xml")


def test_cli_show_reads_a_synthetic_records_file(tmp_path):
    from pathlib import Path

    import pandas as pd
    from typer.testing import CliRunner

    from ehrjudge.cli import app
    from ehrjudge.cohort.build import build_cohort
    from ehrjudge.cohort.featurize import FeatureConfig

    # Setup: a synthetic record in the MIMIC fixture cohort's schema
    fixture = Path(__file__).parent / "fixtures" / "mimic"
    cohort = build_cohort("mimic", tmp_path / "c", path=fixture, patients=None, config=FeatureConfig(min_patients=1))
    record = {name: 0.0 for name in cohort.schema.names} | {"gender": 0.0, "age": 30.0, "dx_icd10_i10": 2.0,
                                                             "diagnoses_count": 2.0}
    pd.DataFrame([{"record_id": "syn-1", "generator": "test", "strength": 0.5} | record]).to_parquet(
        tmp_path / "records.parquet")
    # Run
    result = CliRunner().invoke(app, ["show", "--cohort", str(tmp_path / "c"), "--records",
                                      str(tmp_path / "records.parquet"), "--record", "syn-1"])
    # Assert
    assert result.exit_code == 0, result.output
    assert result.output == ("Demographics: female, age 30, alive\n"
                             "Diagnoses: 2 - Essential (primary) hypertension (I10) x2\n")


def test_cli_show_reads_a_labelled_dataset_split(tmp_path):
    from pathlib import Path

    import pandas as pd
    from typer.testing import CliRunner

    from ehrjudge.cli import app
    from ehrjudge.cohort.build import build_cohort
    from ehrjudge.cohort.featurize import FeatureConfig

    # Setup: the record of the test above with the score columns a judge dataset split carries
    fixture = Path(__file__).parent / "fixtures" / "mimic"
    cohort = build_cohort("mimic", tmp_path / "c", path=fixture, patients=None, config=FeatureConfig(min_patients=1))
    record = {name: 0.0 for name in cohort.schema.names} | {"gender": 0.0, "age": 30.0, "dx_icd10_i10": 2.0,
                                                             "diagnoses_count": 2.0}
    pd.DataFrame([{"record_id": "syn-1", "generator": "test", "strength": 0.5} | record
                  | {"realism_score": 7, "mahalanobis": 3.2, "caps": ""}]).to_parquet(tmp_path / "split.parquet")
    # Run
    result = CliRunner().invoke(app, ["show", "--cohort", str(tmp_path / "c"), "--records",
                                      str(tmp_path / "split.parquet"), "--record", "syn-1"])
    # Assert: the score columns are named and left out, the record shown as from a plain records file
    assert result.exit_code == 0, result.output
    note = result.output.splitlines()[0]
    assert "ignoring 3 score column(s)" in note and all(name in note for name in ("realism_score", "mahalanobis",
                                                                                 "caps"))
    assert result.output.endswith("Demographics: female, age 30, alive\n"
                                  "Diagnoses: 2 - Essential (primary) hypertension (I10) x2\n")


def _unit_reference() -> ReferenceStats:
    """mean 0 and std 1 everywhere (so z = the value) except lab_50912, constant 0 in the reference."""
    std = np.ones(len(SCHEMA.names))
    std[SCHEMA.names.index("lab_50912")] = 0.0
    return ReferenceStats(tuple(SCHEMA.names), np.zeros(len(SCHEMA.names)), std)


def test_deviations_lists_most_unusual_values_with_z():
    # Setup: z = value; lab_50912 = 1 off a constant column -> never seen. |z| > 3: age 67, los sum 7, max 5,
    # mean 3.5 (4); > 2: those + diagnoses_count 3 + los std 2.121 (6).
    # Run
    text = record_to_text(RECORD, SCHEMA, fmt="deviations", reference=_unit_reference(), top=4)
    # Assert
    assert text == ("Demographics: male, age 67, alive\n"
                    "Against the reference cohort: 4 values beyond 3 SD, 6 beyond 2 SD, 1 never seen there\n"
                    "Creatinine (50912) count 1 (never in reference)\n"
                    "age 67 (z +67)\n"
                    "Admissions length of stay sum 7 d (z +7.0)\n"
                    "Admissions length of stay max 5 d (z +5.0)")


def test_deviations_budget_drops_least_unusual_first_and_needs_reference():
    # Setup
    full = record_to_text(RECORD, SCHEMA, fmt="deviations", reference=_unit_reference(), top=4)
    # Run: 3 words fewer than the full text drops the last item (6 words)
    cut = record_to_text(RECORD, SCHEMA, fmt="deviations", reference=_unit_reference(), top=4,
                         max_tokens=words(full) - 3, count_tokens=words)
    # Assert
    assert cut == full.rsplit("\n", 1)[0]
    with pytest.raises(InputError, match="reference"):
        record_to_text(RECORD, SCHEMA, fmt="deviations")


def test_reference_stats_match_numpy_and_flag_constant_columns():
    # Setup: two patients; labs_std is 0 for both (constant)
    rows = [dict(RECORD, subject_id=1), dict(RECORD, subject_id=2, age=71, labs_std=0)]
    import pandas as pd
    cohort = Cohort(vectors=pd.DataFrame(rows)[["subject_id"] + SCHEMA.names].astype(float), schema=SCHEMA)
    # Run
    stats = ReferenceStats.from_cohort(cohort)
    z = stats.z_scores(dict(RECORD, age=73, labs_std=0.5))
    # Assert: age mean 69, std (ddof 0) 2 -> z = 2; a value off the constant labs_std -> +inf; on it -> 0
    assert stats.mean[SCHEMA.names.index("age")] == 69 and stats.std[SCHEMA.names.index("age")] == 2
    assert z["age"] == 2.0 and z["labs_std"] == float("inf") and z["gender"] == 0.0
