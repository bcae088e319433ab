"""Real cohorts -> patient vectors: loaders (MIMIC-IV, FHIR R4, clinosim), featurization, record text."""
