"""Verifiable realism score (per record) and the dataset-level evaluation suite of synthetic EHR."""

from ehrjudge.scoring.realism import RealismScorer, ScoreConfig, score_records

__all__ = ["RealismScorer", "ScoreConfig", "score_records"]
