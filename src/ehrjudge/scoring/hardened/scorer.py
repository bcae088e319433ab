"""The hardened per-record realism score (ScoreConfig.definition = "hardened", the default).

    s_typicality = 10 - 9 clip(log(d / d_med) / log(R1), 0, 1)     d: Mahalanobis distance on normal scores
    s_sparsity   = 10 - 9 clip((z_max - z_ok) / (z_bad - z_ok), 0, 1)   z_max: largest |normal score| of the
                   record's number of distinct codes per table (diagnoses, procedures, ...) against the reference
    quality      = (w_t s_typicality + w_s s_sparsity) / (w_t + w_s)
                   - unusual_penalty * n_unusual - rubric_points * (1 - rubric_pass)
    caps         = privacy_cap = 1 + 9 min(1, copy_ratio)    copy_ratio: DCR / DCR_q, the distance to the closest
                                                                 reference record in reference z-scores (tiny moves
                                                                 stay tiny there) over the held-out quantile; lowered
                                                                 to the same over all but near_copy_free_cells cells
                                                                 where that is below 1 (an edited copy; privacy.py),
                                                                 and to the record-linkage ratio where the record
                                                                 links to a reference patient (linkage.py)
                   invalid_cap    when any hard validity violation (validity.py)
                   essential_cap  when any essential clinical rule is broken (rubric.py)
    realism_continuous = clip(min(quality, caps), 1, 10);   realism_score = round-half-up(realism_continuous)
d_med and DCR_q come from held-out real patients (their median distance; their `near_copy_percentile` DCR quantile):
a record closer to a reference patient than nearly all new real patients are is treated as a (near) copy, the
per-record form of distance-to-closest-record privacy tests (Park et al. 2018 DCR; Yale et al. 2020). `authentic`
is Alaa et al. 2022's per-record test (ICML, "How faithful is your synthetic data?"): the record is further from
its nearest reference patient than that patient is from its own nearest other reference patient.
"""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd

from ehrjudge.cohort.reference_stats import ReferenceStats
from ehrjudge.cohort.schema import Schema
from ehrjudge.errors import InputError
from ehrjudge.scoring.hardened.checks import RecordChecks
from ehrjudge.scoring.hardened.privacy import EXACT_COPY, ClosestPatient
from ehrjudge.scoring.hardened.typicality import Typicality
from ehrjudge.scoring.mapping import linear_score

log = logging.getLogger(__name__)

COLUMNS = ["mahalanobis", "typicality_ratio", "nn_distance", "copy_ratio", "dcr_quantile", "authentic", "near_copy",
           "exact_copy", "linked", "n_invalid", "invalid_columns", "n_unusual", "sparsity_z", "rubric_pass",
           "rule_violations", "s_typicality", "s_sparsity", "privacy_cap", "caps", "realism_continuous",
           "realism_score"]


class HardenedScorer:
    """`HardenedScorer(config, schema).fit(reference, calibration).score(records)`; config is a ScoreConfig."""

    columns = COLUMNS

    def __init__(self, config, schema: Schema):
        self.config, self.schema = config, schema

    def fit(self, reference: np.ndarray, calibration: np.ndarray) -> "HardenedScorer":
        cfg = self.config
        if len(reference) < 3:
            raise InputError(f"reference has {len(reference)} records; the hardened score needs at least 3")
        self.n_features_ = reference.shape[1]
        self.typicality_ = Typicality(cfg.covariance, cfg.chunk_size, cfg.mahalanobis_precision).fit(reference,
                                                                                                   calibration)
        self.median_distance_ = self.typicality_.median_distance_
        self.closest_ = ClosestPatient(cfg.near_copy_percentile, cfg.chunk_size, cfg.near_copy_free_cells,
                                       cfg.near_copy_linkage_percentile).fit(reference, calibration)
        self.dcr_threshold_ = self.closest_.threshold_
        self.checks_ = RecordChecks(cfg, self.schema, ReferenceStats.from_matrix(self.schema, reference))
        if not self.checks_.groups:
            log.info("score/sparsity the schema has no per-code columns: the sparsity component is off")
        self.calibration_ = {
            "definition": "hardened", "n_reference": int(len(reference)), "n_calibration": int(len(calibration)),
            "n_features": int(reference.shape[1]), "n_constant_columns": int((~self.typicality_.varying_).sum()),
            "shrinkage": self.typicality_.mahalanobis_.shrinkage_, "holdout_mahalanobis_median": self.median_distance_,
            "near_copy_threshold": self.dcr_threshold_, "near_copy_free_cells": cfg.near_copy_free_cells,
            "edited_copy_threshold": self.closest_.edited_threshold_,
            "linkage_threshold_bits": None if self.closest_.linkage_ is None else self.closest_.linkage_.threshold_,
            "sparsity_groups": list(self.checks_.groups),
            "rubric_rules": [rule["id"] for rule in self.checks_.rubric.rules],
        }
        log.info("score/calibration %s", self.calibration_)
        return self

    def _distances(self, records: np.ndarray) -> dict[str, np.ndarray]:
        copy = self.closest_.copy_ratio(records)
        return {"mahalanobis": self.typicality_.distance(records), "nn_distance": copy["dcr"],
                "copy_ratio": copy["ratio"], "linked": np.isfinite(copy["linked"]), "nearest": copy["nearest"]}

    def score(self, records: np.ndarray) -> pd.DataFrame:
        """One row per record with COLUMNS: every component, the caps that lowered it, realism_score."""
        cfg = self.config
        frame = pd.DataFrame(self._distances(records))
        nearest = frame.pop("nearest").to_numpy()
        dcr, ratio_copy = frame["nn_distance"].to_numpy(), frame["copy_ratio"].to_numpy()
        frame["typicality_ratio"] = frame["mahalanobis"] / self.median_distance_
        held_out = self.closest_.holdout_dcr_
        frame["dcr_quantile"] = np.searchsorted(held_out, dcr, side="right") / len(held_out)
        frame["authentic"] = dcr > self.closest_.reference_nn_[nearest]
        frame["near_copy"] = ratio_copy <= 1.0
        frame["exact_copy"] = dcr <= EXACT_COPY
        for key, values in self.checks_.check(records).items():
            frame[key] = values
        ratio = np.maximum(frame["typicality_ratio"].to_numpy(), np.finfo(np.float64).tiny)
        frame["s_typicality"] = linear_score(np.log(ratio), np.log(cfg.typicality_ratio_at_one), 0.0)
        frame["s_sparsity"] = linear_score(frame["sparsity_z"].to_numpy(), cfg.sparsity_z_bad, cfg.sparsity_z_ok)
        quality = (cfg.w_typicality * frame["s_typicality"] + cfg.w_sparsity * frame["s_sparsity"]) / (
            cfg.w_typicality + cfg.w_sparsity)
        quality = quality - cfg.unusual_penalty * frame["n_unusual"] - cfg.rubric_points * (1.0 - frame["rubric_pass"])
        quality = np.clip(quality.to_numpy(), 1.0, 10.0)
        frame["privacy_cap"] = 1.0 + 9.0 * np.minimum(1.0, ratio_copy)
        caps = {"near_copy": frame["privacy_cap"].to_numpy(),
                "invalid": np.where(frame["n_invalid"] > 0, cfg.invalid_cap, 10.0),
                "essential_rule": np.where(frame["essential_violated"], cfg.essential_cap, 10.0)}
        cap = np.minimum.reduce(list(caps.values()))
        binding = {name: values < quality - 1e-9 for name, values in caps.items()}  # the caps that lowered it
        frame["caps"] = [";".join(name for name in caps if binding[name][i]) for i in range(len(frame))]
        frame["realism_continuous"] = np.clip(np.minimum(quality, cap), 1.0, 10.0)
        frame["realism_score"] = np.clip(np.floor(frame["realism_continuous"] + 0.5), 1, 10).astype(np.int64)
        return frame[COLUMNS]
