"""Metrics comparing one column at a time, real vs synthetic."""
