"""Verifiable realism score (per record) and the dataset-level evaluation suite of synthetic EHR."""
