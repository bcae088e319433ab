"""The hardened realism score: typicality, privacy, validity, sparsity and a clinical rubric (docs/scoring.md)."""
