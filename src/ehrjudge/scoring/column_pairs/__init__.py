"""Metrics comparing pairs of columns (correlation structure)."""
