"""Evaluation suite: known answers for every metric (identical data, shifted data, copied records)."""

import json

import numpy as np
import pandas as pd
import pytest

from ehrjudge.cohort.schema import Cohort, FeatureSpec, Schema
from ehrjudge.errors import ConfigError, MetricUndefinedError
from ehrjudge.scoring.column_pairs.correlation import correlation_metrics
from ehrjudge.scoring.efficacy.mortality import mortality_metrics
from ehrjudge.scoring.privacy.attribute import attribute_metrics
from ehrjudge.scoring.privacy.membership import membership_metrics
from ehrjudge.scoring.single_column.statistics import dimension_metrics, prevalence_metrics
from ehrjudge.scoring.single_table.rules import evaluate_expression, load_rules, rule_metrics, select_columns
from ehrjudge.scoring.single_table.sparsity import sparsity_metrics
from ehrjudge.scoring.suite import SuiteConfig, evaluate, metric_value

LOS_STATS = ["admissions_los_mean", "admissions_los_sum", "admissions_los_max", "admissions_los_min",
             "admissions_los_std"]
CODES = {"dx_i10": ("diagnoses", "I10"), "dx_e11": ("diagnoses", "E11"), "dx_o80": ("diagnoses", "O80"),
         "dx_c61": ("diagnoses", "C61"), "dx_n40": ("diagnoses", "N40"),
         "rx_metformin": ("prescriptions", "metformin"), "rx_lisinopril": ("prescriptions", "lisinopril"),
         "lab_glucose": ("labs", "glucose")}
SCHEMA = Schema(
    [FeatureSpec("gender", "demographics", "binary", "1 = male"),
     FeatureSpec("age", "demographics", "continuous", "years"),
     FeatureSpec("is_dead", "demographics", "binary", "died"),
     FeatureSpec("admissions_count", "admissions", "count", "admissions")]
    + [FeatureSpec(n, "admissions", "continuous", n) for n in LOS_STATS]
    + [FeatureSpec("diagnoses_count", "diagnoses", "count", "diagnoses"),
       FeatureSpec("prescriptions_count", "prescriptions", "count", "prescriptions"),
       FeatureSpec("labs_count", "labs", "count", "labs")]
    + [FeatureSpec(n, group, "count", code, code=code) for n, (group, code) in CODES.items()],
    source="test")


def patients(n: int, seed: int) -> pd.DataFrame:
    """Plausible patients: every rule in rules.yaml holds, mortality depends on age and admissions."""
    rng = np.random.default_rng(seed)
    male = rng.integers(0, 2, n)
    age = rng.integers(18, 91, n).astype(float)
    admissions = 1 + rng.poisson(0.6, n)
    stays = [rng.exponential(3.0, k) for k in admissions]
    is_dead = rng.random(n) < 1 / (1 + np.exp(-(-3.0 + 0.05 * (age - 55) + 0.9 * (admissions - 1))))
    frame = pd.DataFrame({"gender": male, "age": age, "is_dead": is_dead.astype(float), "admissions_count": admissions})
    for stat in ("mean", "sum", "max", "min"):
        frame[f"admissions_los_{stat}"] = [getattr(s, stat)() for s in stays]
    frame["admissions_los_std"] = [s.std(ddof=1) if len(s) > 1 else 0.0 for s in stays]
    frame["dx_i10"] = rng.poisson(age / 50)
    frame["dx_e11"] = rng.poisson(0.4, n)
    frame["dx_o80"] = (1 - male) * (age < 45) * rng.poisson(0.5, n)
    frame["dx_c61"] = male * (age > 60) * rng.poisson(0.3, n)
    frame["dx_n40"] = male * (age > 50) * rng.poisson(0.4, n)
    frame["diagnoses_count"] = frame[["dx_i10", "dx_e11", "dx_o80", "dx_c61", "dx_n40"]].sum(axis=1) + rng.poisson(1, n)
    has_dx = frame["diagnoses_count"] > 0
    frame["rx_metformin"] = has_dx * rng.poisson(2 * frame["dx_e11"])
    frame["rx_lisinopril"] = has_dx * rng.poisson(frame["dx_i10"])
    frame["prescriptions_count"] = frame["rx_metformin"] + frame["rx_lisinopril"] + has_dx * rng.poisson(0.5, n)
    frame["lab_glucose"] = rng.poisson(1 + frame["dx_e11"])
    frame["labs_count"] = frame["lab_glucose"] + rng.poisson(1, n)
    return frame[SCHEMA.names].astype(float)


def cohort(n: int, seed: int) -> Cohort:
    frame = patients(n, seed)
    frame.insert(0, "subject_id", [f"s{seed}-{i}" for i in range(n)])
    return Cohort(frame, SCHEMA)


def records(frame: pd.DataFrame) -> pd.DataFrame:
    out = frame[SCHEMA.names].reset_index(drop=True).copy()
    out.insert(0, "record_id", [f"r{i}" for i in range(len(out))])
    return out


@pytest.fixture(scope="module")
def data():
    return {"reference": cohort(400, 1), "holdout": cohort(400, 2), "fresh": patients(400, 3)}


def test_dimension_metrics_identical_ideal_and_shifted_bad(data):
    # Setup
    real = data["reference"].matrix()
    # Run
    same = {r["name"]: r["value"] for r in dimension_metrics(real, real.copy(), SCHEMA.names)
            + prevalence_metrics(real, real.copy())}
    shifted = {r["name"]: r["value"] for r in dimension_metrics(real, real + 100.0, SCHEMA.names)}
    # Assert
    assert same == pytest.approx({"dimension/mean_abs_diff": 0.0, "dimension/variance_log_ratio": 0.0,
                                  "dimension/zero_rate_abs_diff": 0.0, "dimension/prevalence_correlation": 1.0},
                                 abs=1e-12)
    sd = real.std(axis=0)
    assert shifted["dimension/mean_abs_diff"] == pytest.approx(np.mean(100.0 / sd))
    assert shifted["dimension/variance_log_ratio"] == pytest.approx(0.0, abs=1e-6)
    assert shifted["dimension/zero_rate_abs_diff"] == pytest.approx((real == 0).mean())
    with pytest.raises(MetricUndefinedError, match="prevalence is constant"):
        prevalence_metrics(real, real + 100.0)


def test_correlation_distance_matches_numpy_and_is_zero_for_identical(data):
    # Setup
    real = data["reference"].matrix()
    rng = np.random.default_rng(4)
    shuffled = np.column_stack([rng.permutation(column) for column in real.T])  # marginals kept, links cut
    # Run
    same = correlation_metrics(real, real.copy())[0]
    broken = correlation_metrics(real, shuffled)[0]
    # Assert
    expected = np.linalg.norm(np.corrcoef(real.T) - np.corrcoef(shuffled.T), "fro") / real.shape[1]
    assert same["value"] == pytest.approx(0.0, abs=1e-12)
    assert broken["value"] == pytest.approx(expected, rel=1e-9)
    assert broken["value"] > 0.05
    assert correlation_metrics(real, real * 3.0 + 7.0)[0]["value"] == pytest.approx(0.0, abs=1e-12)


def test_sparsity_counts_dropped_and_extra_code_columns(data):
    # Setup
    real = data["reference"].matrix()
    synthetic = real.copy()
    dropped = SCHEMA.names.index("dx_c61")
    synthetic[:, dropped] = 0.0
    real_without_o80 = real.copy()
    real_without_o80[:, SCHEMA.names.index("dx_o80")] = 0.0
    # Run
    same = {r["name"]: r["value"] for r in sparsity_metrics(real, real.copy(), SCHEMA)}
    less = {r["name"]: r["value"] for r in sparsity_metrics(real, synthetic, SCHEMA)}
    more = {r["name"]: r["value"] for r in sparsity_metrics(real_without_o80, real, SCHEMA)}
    # Assert
    assert same == {"sparsity/nzc_coverage": 1.0, "sparsity/nzc_extra_rate": 0.0, "sparsity/zero_share_abs_diff": 0.0}
    assert less["sparsity/nzc_coverage"] == pytest.approx(7 / 8)
    assert more["sparsity/nzc_extra_rate"] == pytest.approx(1 / 8)


def test_every_rule_holds_on_plausible_patients_and_each_planted_violation_is_caught(data):
    # Setup
    rules = load_rules()
    real = data["reference"].matrix()
    names = SCHEMA.names
    base = patients(12, 5).reset_index(drop=True)
    base["gender"], base["age"], base["dx_o80"], base["dx_c61"], base["dx_n40"] = 0.0, 30.0, 0.0, 0.0, 0.0
    planted = base.copy()
    planted.loc[0, ["dx_o80", "gender"]] = [1.0, 1.0]                      # pregnant male
    planted.loc[1, ["dx_c61", "diagnoses_count"]] = [1.0, 99.0]             # prostate code, female
    planted.loc[2, "age"] = 130.0
    planted.loc[3, "is_dead"] = 0.5                                         # binary not 0/1
    planted.loc[4, "lab_glucose"] = -1.0                                    # negative count
    planted.loc[5, "rx_metformin"] = 1.5                                    # non-integer count (and exceeds total)
    planted.loc[6, ["admissions_los_min", "admissions_los_max"]] = [9.0, 2.0]
    planted.loc[7, ["diagnoses_count"] + [c for c in names if c.startswith("dx_")]] = 0.0
    planted.loc[7, "prescriptions_count"] = 3.0                             # prescriptions, no diagnosis
    # Run
    clean = {r["name"]: r for r in rule_metrics(real, base.to_numpy(), SCHEMA, np.arange(12), rules)}
    found = {r["name"]: r for r in rule_metrics(real, planted.to_numpy(), SCHEMA, np.arange(12), rules)}
    # Assert
    defined = {n: r for n, r in clean.items() if r["value"] is not None}
    assert all(r["value"] == 0.0 and r["details"]["real_rate"] in (0.0, None) for n, r in defined.items()
               if n != "rules/any_violation_rate"), {n: r["value"] for n, r in defined.items()}
    assert clean["rules/any_violation_rate"]["value"] == 0.0
    expected_rows = {"male_with_pregnancy_code": [0], "female_with_male_specific_code": [1], "impossible_age": [2],
                     "binary_not_zero_or_one": [3], "negative_count": [4], "non_integer_count": [5],
                     "prescriptions_codes_exceed_total": [5], "admissions_los_min_above_max": [6],
                     "prescription_without_diagnosis": [7]}
    for rule, rows in expected_rows.items():
        assert found[f"rules/{rule}"]["details"]["examples"] == [str(r) for r in rows], rule
        assert found[f"rules/{rule}"]["value"] == pytest.approx(len(rows) / 12)
    assert found["rules/labs_values_without_events"]["value"] is None
    assert "not applicable" in found["rules/labs_values_without_events"]["reason"]


def test_rule_language_selectors_templates_and_errors(tmp_path):
    # Setup
    matrix = patients(5, 6).to_numpy()
    rules_file = tmp_path / "rules.yaml"
    rules_file.write_text("rules:\n  - id: '{c}_big'\n    description: big {c}\n    for_each: [{c: age}, {c: gender}]\n"
                          "    violation: {columns: {name: '{c}'}, op: '>', value: 50}\n")
    # Run
    rules = load_rules(rules_file)
    prostate = select_columns(SCHEMA, {"group": "diagnoses", "code_prefix": ["c6", "N4"]})
    count_columns = select_columns(SCHEMA, {"kind": "count", "name_pattern": "^dx_"})
    # Assert
    assert [r["id"] for r in rules] == ["age_big", "gender_big"]
    assert [SCHEMA.names[j] for j in prostate] == ["dx_c61", "dx_n40"]
    assert len(count_columns) == 5
    np.testing.assert_array_equal(evaluate_expression(rules[0]["violation"], matrix, SCHEMA), matrix[:, 1] > 50)
    with pytest.raises(ConfigError, match="operator"):
        evaluate_expression({"columns": {"name": "age"}, "op": "=>", "value": 1}, matrix, SCHEMA)
    with pytest.raises(ConfigError, match="selector"):
        select_columns(SCHEMA, {"prefix": "dx"})
    with pytest.raises(MetricUndefinedError, match="no column matches"):
        evaluate_expression({"columns": {"name": "bmi"}, "op": ">", "value": 1}, matrix, SCHEMA)


def test_membership_attack_exposes_copies_and_not_fresh_draws(data):
    # Setup
    members, non_members = data["reference"].matrix(), data["holdout"].matrix()
    # Run
    copied = {r["name"]: r["value"] for r in membership_metrics(members, non_members, members.copy())}
    fresh = {r["name"]: r["value"] for r in membership_metrics(members, non_members, data["fresh"].to_numpy())}
    # Assert
    assert copied == {"privacy/membership_auc": 1.0, "privacy/membership_precision": 1.0,
                      "privacy/membership_recall": 1.0, "privacy/membership_f1": 1.0}
    assert abs(fresh["privacy/membership_auc"] - 0.5) < 0.08
    assert abs(fresh["privacy/membership_precision"] - 0.5) < 0.1


def test_attribute_inference_from_copies_is_perfect_and_leaks_only_for_members(data):
    # Setup
    members, non_members = data["reference"].matrix(), data["holdout"].matrix()
    # Run
    copied = attribute_metrics(members, members.copy(), SCHEMA, ["gender", "is_dead", "missing"], non_members)
    fresh = attribute_metrics(members, data["fresh"].to_numpy(), SCHEMA, ["gender", "is_dead"], non_members)
    # Assert
    assert copied[0]["value"] == 1.0
    assert set(copied[0]["details"]["columns"]) == {"gender", "is_dead"}
    assert copied[1]["value"] > 0.1
    assert abs(fresh[1]["value"]) < 0.08
    with pytest.raises(MetricUndefinedError, match="sensitive columns"):
        attribute_metrics(members, members, SCHEMA, ["ethnicity"])


def test_tstr_close_to_trtr_on_fresh_draws_and_chance_on_scrambled_labels(data):
    # Setup
    real, test = data["reference"].matrix(), data["holdout"].matrix()
    fresh = data["fresh"].to_numpy()
    scrambled = fresh.copy()
    j = SCHEMA.names.index("is_dead")
    scrambled[:, j] = np.random.default_rng(7).permutation(scrambled[:, j])
    # Run
    good = {r["name"]: r["value"] for r in mortality_metrics(real, fresh, test, SCHEMA.names)}
    bad = {r["name"]: r["value"] for r in mortality_metrics(real, scrambled, test, SCHEMA.names)}
    # Assert
    assert good["efficacy/trtr_auroc"] > 0.7
    assert abs(good["efficacy/auroc_gap"]) < 0.08
    assert bad["efficacy/tstr_auroc"] < 0.65 and bad["efficacy/auroc_gap"] > 0.1
    single = fresh.copy()
    single[:, j] = 0.0
    with pytest.raises(MetricUndefinedError, match="single negative class"):
        mortality_metrics(real, single, test, SCHEMA.names)
    with pytest.raises(MetricUndefinedError, match="held-out"):
        mortality_metrics(real, fresh, None, SCHEMA.names)


def test_full_report_identical_vs_copies_vs_shifted(data):
    # Setup
    reference, holdout = data["reference"], data["holdout"]
    copies = records(reference.vectors)
    fresh = records(data["fresh"])
    single_class = fresh.copy()
    single_class["is_dead"] = 0.0
    # Run
    copy_report = evaluate(reference, copies, holdout)
    fresh_report = evaluate(reference, fresh, holdout)
    single_report = evaluate(reference, single_class, None, SuiteConfig(parts=["efficacy", "privacy"]))
    # Assert
    assert metric_value(copy_report, "realism/near_copy_rate") == 1.0
    assert metric_value(copy_report, "privacy/membership_auc") == 1.0
    assert metric_value(copy_report, "correlation/frobenius_distance") == pytest.approx(0.0, abs=1e-12)
    assert metric_value(fresh_report, "realism/near_copy_rate") < 0.15
    assert metric_value(fresh_report, "realism/mean_score") > 8.0
    assert metric_value(fresh_report, "rules/any_violation_rate") == 0.0
    undefined = {r["name"]: r["reason"] for r in single_report["metrics"] if r["value"] is None}
    assert "held-out" in undefined["efficacy/tstr_auroc"] and "held-out" in undefined["privacy/membership_auc"]
    for row in copy_report["metrics"]:
        assert row["goal"] in ("maximize", "minimize") and len(row["range"]) == 2
        assert row["value"] is not None or row["reason"]
    assert len(copy_report["features"]) == len(SCHEMA.names)
    json.dumps(copy_report, allow_nan=False)


def test_suite_config_rejects_unknown_parts():
    # Setup / Run / Assert
    with pytest.raises(ConfigError, match="unknown part"):
        SuiteConfig(parts=["dimension", "vibes"])
