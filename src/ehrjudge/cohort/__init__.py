"""Real cohorts -> patient vectors: loaders (MIMIC-IV, FHIR R4, clinosim), featurization, record text."""

from ehrjudge.cohort.schema import Cohort, FeatureSpec, Schema

__all__ = ["Cohort", "FeatureSpec", "Schema"]
