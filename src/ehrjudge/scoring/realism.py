"""The verifiable per-record realism score (1..10) of synthetic patient vectors against a real reference.

Two definitions (ScoreConfig.definition):
- `hardened` (default, scoring/hardened/scorer.py): typicality on normal scores, a privacy cap for copies, value
  validity, code sparsity and the clinical rubric; copies, mean patients and invalid records score low.
- `seed`, the original design, kept exactly for comparison (SeedScorer below):
    realism_continuous = (w_maha * s_maha + w_knn * s_knn) / (w_maha + w_knn)     in [1, 10]
    realism_scaled     = attainable_scale(realism_continuous)                       in [1, 10]
    realism_score      = round-half-up(realism_scaled)                              in 1..10
  s_maha maps the shrinkage-Mahalanobis distance of the record to the reference distribution (closer = better)
  minus `offsupport_penalty` per column that is constant in the reference but not in the record; s_knn maps
  the mean distance to the k nearest reference records (further = better privacy, capped). Both distances
  live in the reference-standardized space with reference-constant columns dropped.
See docs/scoring.md.
"""

from __future__ import annotations

import dataclasses
import logging

import numpy as np
import pandas as pd

from ehrjudge.cohort.schema import Cohort, Schema, schema_records
from ehrjudge.errors import InputError
from ehrjudge.io import check_finite, check_ids
from ehrjudge.scoring.config import ScoreConfig
from ehrjudge.scoring.hardened.scorer import HardenedScorer
from ehrjudge.scoring.knn import ExactKNN
from ehrjudge.scoring.mahalanobis import ShrunkMahalanobis
from ehrjudge.scoring.mapping import linear_score, quantile_knn_anchors, quantile_maha_anchors

log = logging.getLogger(__name__)

SEED_COLUMNS = ["mahalanobis", "knn_distance", "nn_distance", "n_offsupport", "s_maha", "s_knn",
                "realism_continuous", "realism_scaled", "realism_score", "near_copy"]
SCORE_COLUMNS = list(dict.fromkeys([*SEED_COLUMNS, *HardenedScorer.columns]))  # what either definition writes
CONSTANT_TOLERANCE = 1e-12  # a column is constant when std <= tol * max(1, |mean|)


def read_unscored_records(path, schema: Schema) -> tuple[pd.DataFrame, list[str]]:
    """(records validated against `schema`, the score columns dropped): the score columns of a scoring run (e.g. a
    judge dataset split) are left out, so labelled files can be judged, gated or re-scored as they are; the caller
    says which it dropped."""
    from ehrjudge.cohort.schema import validate_vectors
    from ehrjudge.io import read_table

    frame = read_table(path)
    ignored = [c for c in SCORE_COLUMNS if c in frame.columns]
    return validate_vectors(frame.drop(columns=ignored), schema, file=path), ignored


def _as_matrix(values, name: str, n_columns: int | None = None) -> np.ndarray:
    matrix = np.asarray(values, dtype=np.float64)
    if matrix.ndim != 2 or matrix.shape[0] == 0:
        raise InputError(f"{name} must be a non-empty 2-D array, got shape {matrix.shape}")
    if n_columns is not None and matrix.shape[1] != n_columns:
        raise InputError(f"{name} has {matrix.shape[1]} columns, the reference has {n_columns}")
    bad = ~np.isfinite(matrix)
    if bad.any():
        row, column = (int(i) for i in np.argwhere(bad)[0])
        raise InputError(f"{name} holds a non-finite value", column=str(column), row=row)
    return matrix


class RealismScorer:
    """`RealismScorer(config, schema).fit(reference, holdout).score(records)` -> one row of scores per record.

    Fits the definition that `config.definition` names; the hardened one needs the cohort's schema (column kinds,
    codes and the clinical rules). Without a holdout a seeded `calibration_fraction` of the reference calibrates
    and is left out of it."""

    def __init__(self, config: ScoreConfig | None = None, schema: Schema | None = None):
        self.config, self.schema = config or ScoreConfig(), schema

    def fit(self, reference: np.ndarray, holdout: np.ndarray | None = None) -> "RealismScorer":
        cfg = self.config
        reference = _as_matrix(reference, "reference")
        if holdout is None:
            reference, calibration = split_calibration(reference, cfg)
        else:
            calibration = _as_matrix(holdout, "holdout", reference.shape[1])
        if cfg.definition == "seed":
            self.fitted_ = SeedScorer(cfg).fit(reference, calibration)
        else:
            if self.schema is None or len(self.schema.names) != reference.shape[1]:
                raise InputError("the hardened realism score needs the reference's schema (column kinds and codes)")
            self.fitted_ = HardenedScorer(cfg, self.schema).fit(reference, calibration)
        self.calibration_ = self.fitted_.calibration_
        return self

    @classmethod
    def from_cohorts(cls, reference, holdout=None, config: ScoreConfig | None = None,
                     definition: str | None = None) -> "RealismScorer":
        """Fitted on a reference cohort (folder or Cohort), calibrated on `holdout` (folder or Cohort) when given;
        `definition` ("hardened", the default, or "seed") replaces config.definition."""
        if definition is not None:
            config = dataclasses.replace(config or ScoreConfig(), definition=definition)
        reference = reference if isinstance(reference, Cohort) else Cohort.load(reference)
        holdout = holdout if holdout is None or isinstance(holdout, Cohort) else Cohort.load(holdout)
        return fit_scorer(reference, config, holdout)

    @property
    def columns(self) -> list[str]:
        """The score columns this definition writes, after record_id."""
        return SEED_COLUMNS if self.config.definition == "seed" else HardenedScorer.columns

    def score(self, records: np.ndarray | pd.DataFrame) -> pd.DataFrame:
        """One row per record with `columns` (components, caps and their reasons, realism_score). A DataFrame
        (schema columns, optional record_id, other columns ignored) gets record_id first."""
        if not hasattr(self, "fitted_"):
            raise InputError("RealismScorer.score called before fit")
        if isinstance(records, pd.DataFrame):
            if self.schema is None:
                raise InputError("scoring a DataFrame needs the schema: RealismScorer(config, schema)")
            frame = schema_records(records, self.schema)
            scores = self.score(frame[self.schema.names].to_numpy(dtype=np.float64))
            scores.insert(0, "record_id", frame["record_id"].to_numpy())
            return scores
        return self.fitted_.score(_as_matrix(records, "records", self.fitted_.n_features_))


def split_calibration(reference: np.ndarray, cfg: ScoreConfig) -> tuple[np.ndarray, np.ndarray]:
    """(kept reference, calibration rows): a seeded `calibration_fraction` of the reference, left out of it."""
    n = reference.shape[0]
    n_calibration = max(2, int(round(cfg.calibration_fraction * n)))
    if n - n_calibration < cfg.k:
        raise InputError(f"reference has {n} record(s): too few to hold out {n_calibration} for calibration "
                         f"and keep k={cfg.k} (needs at least {n_calibration + cfg.k}, or a --holdout cohort)")
    order = np.random.default_rng(cfg.calibration_seed).permutation(n)
    return reference[np.sort(order[n_calibration:])], reference[np.sort(order[:n_calibration])]


class SeedScorer:
    """The original design's score: `SeedScorer(config).fit(reference, calibration).score(records)`."""

    columns = SEED_COLUMNS

    def __init__(self, config: ScoreConfig):
        self.config = config

    def fit(self, reference: np.ndarray, calibration: np.ndarray) -> "SeedScorer":
        """Fit standardization, covariance and kNN index on `reference`; calibrate on `calibration`."""
        cfg = self.config
        if reference.shape[0] < cfg.k:
            raise InputError(f"reference has {reference.shape[0]} records, fewer than k={cfg.k}")
        self.n_features_ = reference.shape[1]
        self.mean_ = reference.mean(axis=0)
        std = reference.std(axis=0)
        self.constant_ = std <= CONSTANT_TOLERANCE * np.maximum(1.0, np.abs(self.mean_))  # (p,)
        if self.constant_.all():
            raise InputError("every column is constant in the reference; nothing to score against")
        self.scale_ = std[~self.constant_] if cfg.standardize == "zscore" else np.ones(int((~self.constant_).sum()))
        standardized = self._standardize(reference)
        self.mahalanobis_ = ShrunkMahalanobis(cfg.covariance, cfg.chunk_size,
                                              cfg.mahalanobis_precision).fit(standardized)
        self.knn_ = ExactKNN(standardized, cfg.chunk_size)
        self._calibrate(self._distances(calibration))
        return self

    def _standardize(self, matrix: np.ndarray) -> np.ndarray:
        used = ~self.constant_
        if used.all():  # no column copy; subtract then divide in place (one new array, not three)
            standardized = matrix - self.mean_
        else:
            standardized = matrix[:, used]
            standardized -= self.mean_[used]
        standardized /= self.scale_
        return standardized  # (n, p_used)

    def _distances(self, records: np.ndarray) -> dict[str, np.ndarray]:
        """Distances of each record, computed chunk by chunk so memory stays O(chunk x (p + n_reference))."""
        step = self.config.chunk_size
        parts = [self._chunk_distances(records[start:start + step]) for start in range(0, len(records), step)]
        return {key: np.concatenate([part[key] for part in parts]) for key in parts[0]}

    def _chunk_distances(self, records: np.ndarray) -> dict[str, np.ndarray]:
        standardized = self._standardize(records)
        knn, _ = self.knn_.kneighbors(standardized, self.config.k)  # (n, k)
        deviates = np.abs(records[:, self.constant_] - self.mean_[self.constant_]) > (
            CONSTANT_TOLERANCE * np.maximum(1.0, np.abs(self.mean_[self.constant_])))
        return {
            "mahalanobis": self.mahalanobis_.distance(standardized),
            "knn_distance": knn.mean(axis=1),
            "nn_distance": knn[:, 0],
            "n_offsupport": deviates.sum(axis=1).astype(np.int64),
        }

    def _calibrate(self, held_out: dict[str, np.ndarray]) -> None:
        cfg = self.config
        root_p = float(np.sqrt(self.scale_.shape[0]))
        if cfg.mapping == "fixed":
            self.maha_anchors_ = (cfg.maha_anchor_bad * root_p, cfg.maha_anchor_good * root_p)
            self.knn_anchors_ = (cfg.knn_anchor_copy * root_p, cfg.knn_anchor_private * root_p)
        else:
            self.maha_anchors_ = quantile_maha_anchors(held_out["mahalanobis"], cfg.quantile_good,
                                                       cfg.quantile_tail, cfg.tail_score)
            self.knn_anchors_ = quantile_knn_anchors(held_out["knn_distance"], cfg.knn_private_quantile)
        self.near_copy_threshold_ = float(np.percentile(held_out["nn_distance"], cfg.near_copy_percentile))
        self.calibration_ = {
            "definition": "seed",
            "mapping": cfg.mapping,
            "n_reference": int(self.knn_.reference.shape[0]),
            "n_calibration": int(held_out["nn_distance"].shape[0]),
            "n_features": int(self.n_features_),
            "n_constant_columns": int(self.constant_.sum()),
            "shrinkage": self.mahalanobis_.shrinkage_,
            "maha_anchors": {"score_1": self.maha_anchors_[0], "score_10": self.maha_anchors_[1],
                             "scale": "log distance" if cfg.mapping == "quantile" else "distance"},
            "knn_anchors": {"score_1": self.knn_anchors_[0], "score_10": self.knn_anchors_[1]},
            "near_copy_threshold": self.near_copy_threshold_,
            "holdout_mahalanobis_median": float(np.median(held_out["mahalanobis"])),
            "holdout_knn_median": float(np.median(held_out["knn_distance"])),
            "holdout_offsupport_mean": float(held_out["n_offsupport"].mean()),
        }
        log.info("score/calibration %s", self.calibration_)

    def score(self, records: np.ndarray) -> pd.DataFrame:
        """One row per record with SEED_COLUMNS (distances, component scores, final score, near_copy)."""
        cfg = self.config
        distances = self._distances(records)
        maha = distances["mahalanobis"]
        if cfg.mapping == "quantile":
            maha = np.log(np.maximum(maha, np.finfo(np.float64).tiny))
        s_maha = linear_score(maha, *self.maha_anchors_)
        s_maha = np.clip(s_maha - cfg.offsupport_penalty * distances["n_offsupport"], 1.0, 10.0)
        s_knn = linear_score(distances["knn_distance"], *self.knn_anchors_)
        continuous = (cfg.w_maha * s_maha + cfg.w_knn * s_knn) / (cfg.w_maha + cfg.w_knn)
        continuous = np.clip(continuous, 1.0, 10.0)
        scaled = attainable_scale(continuous, cfg.w_maha, cfg.w_knn)
        frame = pd.DataFrame(distances)
        frame["s_maha"] = s_maha
        frame["s_knn"] = s_knn
        frame["realism_continuous"] = continuous
        frame["realism_scaled"] = scaled
        frame["realism_score"] = np.clip(np.floor(scaled + 0.5), 1, 10).astype(np.int64)
        frame["near_copy"] = distances["nn_distance"] <= self.near_copy_threshold_
        return frame[SEED_COLUMNS]


def attainable_scale(continuous: np.ndarray, w_maha: float, w_knn: float) -> np.ndarray:
    """Spread the attainable range of the combination over 1..10.

    A record that copies no real patient has s_knn = 10 (further is better, capped), so the worst
    realism it can reach is floor = (w_maha·1 + w_knn·10)/(w_maha + w_knn), e.g. 2.35 with the default
    0.85/0.15 weights, and the label 1 would never occur. The integer score therefore maps
    [floor, 10] linearly onto [1, 10]; only a record that is both an outlier and a copy falls below
    the floor and clips to 1. The map is monotone, so rank correlations are unchanged.
    """
    floor = (w_maha + 10.0 * w_knn) / (w_maha + w_knn)
    if floor >= 10.0:  # w_maha = 0: the kNN component alone, already spanning 1..10
        return np.asarray(continuous, dtype=np.float64)
    return np.clip(1.0 + 9.0 * (np.asarray(continuous) - floor) / (10.0 - floor), 1.0, 10.0)


def score_records(reference: Cohort, records: pd.DataFrame, config: ScoreConfig | None = None,
                  holdout: Cohort | None = None, *, records_file=None, engine=None) -> pd.DataFrame:
    """Score synthetic `records` (record_id + the reference schema's columns) -> record_id then the score columns.

    `engine` (an ehrjudge.engine.EngineConfig): where the fitted scorer runs; None = this process."""
    from ehrjudge.engine import LOCAL, score_matrix

    config = config or ScoreConfig()
    names = reference.schema.names
    if len(records) == 0:
        raise InputError("no synthetic records", file=records_file)
    if "record_id" not in records.columns:
        raise InputError("synthetic records need a record_id column", file=records_file, column="record_id")
    check_ids(records, file=records_file)
    reference.schema.check_columns(records, file=records_file)
    check_finite(records, names, file=records_file)
    scorer = fit_scorer(reference, config, holdout)
    scores = score_matrix(scorer, records[names].to_numpy(dtype=np.float64), engine or LOCAL)
    scores.insert(0, "record_id", records["record_id"].to_numpy())
    return scores


def fit_scorer(reference: Cohort, config: ScoreConfig | None = None, holdout: Cohort | None = None) -> RealismScorer:
    """A scorer fitted on a reference cohort (for scoring many record sets against the same reference)."""
    holdout_matrix = None
    if holdout is not None:
        if holdout.schema.names != reference.schema.names:
            mismatch = next((a for a, b in zip(holdout.schema.names, reference.schema.names) if a != b),
                            "(different column count)")
            raise InputError("holdout cohort columns differ from the reference", column=mismatch)
        holdout_matrix = holdout.matrix()
    return RealismScorer(config or ScoreConfig(), reference.schema).fit(reference.matrix(), holdout_matrix)
