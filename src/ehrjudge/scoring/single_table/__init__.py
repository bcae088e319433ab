"""Metrics over the whole table: sparsity, clinical rule violations."""
