"""A small correlated random cohort in the cohort contract's shape, for tests and examples without a simulator."""

from __future__ import annotations

import numpy as np
import pandas as pd

from ehrjudge.cohort.schema import Cohort, FeatureSpec, Schema

# (column, ICD-10 code): O80 is female-only, N40 male-only, P07 perinatal; the rest are unrestricted.
TOY_DIAGNOSES = [("dx_I10", "I10"), ("dx_E11", "E11"), ("dx_J18", "J18"), ("dx_N39", "N39"), ("dx_K35", "K35"),
                 ("dx_O80", "O80"), ("dx_N40", "N40"), ("dx_P07", "P07"), ("dx_F03", "F03"), ("dx_I50", "I50")]
TOY_DRUGS = ["rx_metformin", "rx_lisinopril", "rx_amoxicillin", "rx_furosemide", "rx_insulin", "rx_aspirin"]
TOY_LABS = ["lab_glucose", "lab_creatinine", "lab_hemoglobin", "lab_sodium", "lab_potassium", "lab_wbc"]


def toy_cohort(n: int = 300, seed: int = 0) -> Cohort:
    """`n` patients whose counts share a latent severity, with sex- and age-specific codes where plausible."""
    rng = np.random.default_rng(seed)
    male = rng.integers(2, size=n).astype(float)
    age = np.clip(rng.normal(55, 18, size=n), 18, 95).round()
    severity = rng.gamma(2.0, 0.5, size=n) * (1 + (age - 55) / 80)  # older patients are sicker on average
    admissions = rng.poisson(0.5 + severity)
    los = np.where(admissions > 0, rng.gamma(2.0, 1.0 + severity, size=n), 0.0)
    columns: dict[str, np.ndarray] = {"gender": male, "age": age, "is_dead": (rng.random(n) < 0.02 * severity)}
    columns["admission_count"] = admissions.astype(float)
    columns["los_mean"] = los.round(2)
    features = [FeatureSpec("gender", "demographics", "binary", "1 = male"),
                FeatureSpec("age", "demographics", "continuous", "age in years"),
                FeatureSpec("is_dead", "demographics", "binary", "died in the study window"),
                FeatureSpec("admission_count", "admissions", "count", "number of admissions"),
                FeatureSpec("los_mean", "admissions", "continuous", "mean length of stay, days")]
    for name, code in TOY_DIAGNOSES:
        rate = 0.15 * severity
        if code == "O80":
            rate = np.where((male == 0) & (age < 45), 0.4, 0.0)
        elif code == "N40":
            rate = np.where((male == 1) & (age > 50), 0.3 * severity, 0.0)
        elif code == "P07":
            rate = np.zeros(n)
        columns[name] = rng.poisson(rate)
        features.append(FeatureSpec(name, "diagnoses", "count", f"ICD-10 {code}", code))
    for name in TOY_DRUGS:
        columns[name] = rng.poisson(0.3 * severity)
        features.append(FeatureSpec(name, "prescriptions", "count", name[3:], name[3:]))
    for name in TOY_LABS:
        columns[name] = rng.poisson(1.0 + 2.0 * severity)
        features.append(FeatureSpec(name, "labs", "count", name[4:], name[4:]))
    vectors = pd.DataFrame({"subject_id": [f"toy-{seed}-{i}" for i in range(n)]})
    vectors = pd.concat([vectors, pd.DataFrame({k: np.asarray(v, dtype=float) for k, v in columns.items()})], axis=1)
    return Cohort(vectors=vectors, schema=Schema(features=features, source="toy", settings={"seed": seed}))
