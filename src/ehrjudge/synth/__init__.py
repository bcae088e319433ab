"""Synthetic patient vectors along a realism ladder (generators) and the judge's train/val/test data (dataset)."""
