"""The settings of the realism score (`ScoreConfig`) and of the evaluation suite (`SuiteConfig`).

Kept apart from realism.py and suite.py so `--help` and the run config read them without numpy or scikit-learn.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Literal, Optional

from ehrjudge.config import option
from ehrjudge.errors import ConfigError

PARTS = ("dimension", "correlation", "sparsity", "rules", "realism", "detection", "fidelity", "privacy", "efficacy")


@dataclasses.dataclass
class ScoreConfig:
    """Settings of the realism score; every field is a `--key value` flag of `ehrjudge score`."""

    definition: Literal["hardened", "seed"] = option(
        "hardened", "hardened (typicality, privacy cap, validity, sparsity, rubric) or seed (the original "
                    "0.85 Mahalanobis + 0.15 kNN score, exactly)")
    covariance: Literal["ledoit_wolf", "oas"] = option("ledoit_wolf", "shrinkage covariance estimator")
    k: int = option(5, "neighbours averaged in knn_distance")
    w_maha: float = option(0.85, "weight of the Mahalanobis component")
    w_knn: float = option(0.15, "weight of the kNN (privacy) component")
    mapping: Literal["fixed", "quantile"] = option(
        "quantile", "distance -> 1..10 mapping: calibrated on held-out real records, or fixed anchors")
    standardize: Literal["zscore", "none"] = option("zscore", "scale columns by the reference std first")
    maha_anchor_good: float = option(1.0, "fixed: per-column Mahalanobis d/sqrt(p) that scores 10")
    maha_anchor_bad: float = option(4.0, "fixed: per-column Mahalanobis d/sqrt(p) that scores 1")
    knn_anchor_copy: float = option(0.0, "fixed: per-column kNN distance d/sqrt(p) that scores 1")
    knn_anchor_private: float = option(0.5, "fixed: per-column kNN distance d/sqrt(p) that scores 10 (cap)")
    quantile_good: float = option(0.5, "quantile: held-out Mahalanobis quantile that scores 10")
    quantile_tail: float = option(0.95, "quantile: held-out Mahalanobis quantile that scores tail_score")
    tail_score: float = option(8.0, "quantile: score of a held-out real record at quantile_tail")
    knn_private_quantile: float = option(0.5, "quantile: held-out kNN-distance quantile that scores 10 (cap)")
    offsupport_penalty: float = option(0.5, "points off s_maha per column constant in the reference "
                                            "on which the record differs (0 = off)")
    calibration_fraction: float = option(0.2, "share of the reference held out for calibration when no "
                                              "holdout is given")
    calibration_seed: int = option(0, "seed of that calibration split")
    near_copy_percentile: float = option(5.0, "near copy: nn_distance <= this percentile of held-out "
                                              "real-to-reference nearest distances")
    near_copy_free_cells: int = option(3, "hardened: a record within the near-copy distance of a reference patient "
                                          "in all but this many cells is a near copy too (a copy with edits; "
                                          "0 = the plain distance only, as before 2026-12-07 evening; 1 until "
                                          "2026-12-07 night)")
    near_copy_linkage_percentile: float = option(
        1.0, "hardened: a record that links to a reference patient (Fellegi-Sunter record linkage: it reproduces "
             "more of one patient's values than all but this percent of held-out real patients do) is a near copy "
             "too, whatever it added (scoring/hardened/linkage.py; 0 = off, as before 2026-12-08)")
    typicality_ratio_at_one: float = option(
        100.0, "hardened: Mahalanobis distance on normal scores, as a multiple of the held-out real median, "
               "that scores 1 (the median and closer score 10; linear in log distance between)")
    w_typicality: float = option(0.8, "hardened: weight of the typicality component")
    w_sparsity: float = option(0.2, "hardened: weight of the code-sparsity component")
    sparsity_z_ok: float = option(2.5, "hardened: largest |normal score| of codes per table that still scores 10")
    sparsity_z_bad: float = option(6.0, "hardened: |normal score| of codes per table that scores 1")
    range_margin: float = option(1.0, "hardened: a value further than this many reference ranges beyond the "
                                      "reference's min/max is invalid (within it: unusual)")
    floor_mass: float = option(0.01, "hardened: a column's minimum held by at least this share of the reference "
                                     "is a floor; values below it are invalid")
    unusual_penalty: float = option(0.5, "hardened: points off per unusual value (outside the reference range "
                                         "within the margin, or a code no reference patient has)")
    rubric_points: float = option(10.0, "hardened: points off for a rubric pass rate of 0 (linear in 1 - pass)")
    invalid_cap: float = option(2.0, "hardened: highest score of a record with an invalid value")
    essential_cap: float = option(4.0, "hardened: highest score of a record breaking an essential clinical rule")
    rules_file: Optional[Path] = option(None, "hardened: clinical rules YAML (default: the packaged "
                                              "scoring/rules.yaml)")
    chunk_size: int = option(2048, "synthetic records per chunk (bounds memory: chunk x n_reference floats)")
    mahalanobis_precision: Literal["float64", "float32"] = option(
        "float32", "Mahalanobis arithmetic: float32 GEMM against L^-1 (default, faster; d^2 within ~1e-7 "
                   "relative of float64 on the scale benchmark) or float64 triangular solve")

    def __post_init__(self):
        checks = [
            (self.definition in ("hardened", "seed"), f"definition must be hardened or seed, got {self.definition!r}"),
            (self.k >= 1, "k must be >= 1"),
            (self.w_maha >= 0 and self.w_knn >= 0 and self.w_maha + self.w_knn > 0,
             "weights must be >= 0 with a positive sum"),
            (self.maha_anchor_good != self.maha_anchor_bad, "maha anchors must differ"),
            (self.knn_anchor_copy != self.knn_anchor_private, "knn anchors must differ"),
            (0 < self.quantile_good < self.quantile_tail < 1, "need 0 < quantile_good < quantile_tail < 1"),
            (1 < self.tail_score < 10, "tail_score must lie in (1, 10)"),
            (0 < self.knn_private_quantile < 1, "knn_private_quantile must lie in (0, 1)"),
            (self.offsupport_penalty >= 0, "offsupport_penalty must be >= 0"),
            (0 < self.calibration_fraction < 1, "calibration_fraction must lie in (0, 1)"),
            (0 <= self.near_copy_percentile <= 100, "near_copy_percentile must lie in [0, 100]"),
            (self.near_copy_free_cells >= 0, "near_copy_free_cells must be >= 0"),
            (0 <= self.near_copy_linkage_percentile < 100, "near_copy_linkage_percentile must lie in [0, 100)"),
            (self.chunk_size >= 1, "chunk_size must be >= 1"),
            (self.typicality_ratio_at_one > 1, "typicality_ratio_at_one must be > 1"),
            (self.w_typicality >= 0 and self.w_sparsity >= 0 and self.w_typicality + self.w_sparsity > 0,
             "hardened weights must be >= 0 with a positive sum"),
            (0 <= self.sparsity_z_ok < self.sparsity_z_bad, "need 0 <= sparsity_z_ok < sparsity_z_bad"),
            (self.range_margin >= 0 and 0 < self.floor_mass <= 1, "need range_margin >= 0, 0 < floor_mass <= 1"),
            (self.unusual_penalty >= 0 and self.rubric_points >= 0, "penalties must be >= 0"),
            (1 <= self.invalid_cap <= 10 and 1 <= self.essential_cap <= 10, "caps must lie in [1, 10]"),
        ]
        for ok, message in checks:
            if not ok:
                raise ConfigError(f"ScoreConfig: {message}")


@dataclasses.dataclass
class SuiteConfig:
    """Settings of `ehrjudge evaluate`."""

    parts: list[str] = option(list(PARTS), "which metric families to run (comma-separated)")
    score: ScoreConfig = option(ScoreConfig(), "realism score settings (--score.k 5, ...)")
    sensitive_columns: list[str] = option(["gender", "is_dead"], "binary columns an attacker tries to infer")
    attribute_k: int = option(1, "synthetic neighbours voting in the attribute-inference attack")
    mortality_label: str = option("is_dead", "label column of the TSTR/TRTR task")
    regularization: float = option(0.1, "inverse L2 strength C of the TSTR/TRTR logistic regression")
    rules_file: Path | None = option(None, "clinical rules YAML (default: the packaged scoring/rules.yaml)")
    per_feature: bool = option(True, "include the per-feature mean/variance/zero-rate table in the JSON")
    seed: int = option(0, "seed of the membership-attack sampling")

    def __post_init__(self):
        unknown = [p for p in self.parts if p not in PARTS]
        if unknown:
            raise ConfigError(f"SuiteConfig: unknown part(s) {unknown}; choose from {list(PARTS)}")
        if self.attribute_k < 1:
            raise ConfigError("SuiteConfig: attribute_k must be >= 1")


# Hardened-score settings added after datasets and judges were first saved, with the value that reproduces the score
# from before each existed: a saved score section (written whole) that lacks one was labelled without it.
ADDED_LATER = {"near_copy_free_cells": 0, "near_copy_linkage_percentile": 0.0}


def saved_score_config(section: dict, prefix: str = "") -> ScoreConfig:
    """The ScoreConfig of a saved score section (a dataset's config.yaml, a judge's ehrjudge.json): fields it lacks
    take their defaults, except those in ADDED_LATER, which take the value they had before they existed."""
    from ehrjudge.config import config_from_dict

    keys = {str(key).replace("-", "_") for key in section}
    older = {key: value for key, value in ADDED_LATER.items() if key not in keys}
    return config_from_dict(ScoreConfig, {**section, **older}, prefix=prefix)


def dataset_score_config(reference_dir: Path) -> "ScoreConfig | None":
    """The ScoreConfig a judge dataset was labelled with (the config.yaml beside its reference/), when there is one."""
    import yaml

    saved = Path(reference_dir).parent / "config.yaml"
    if Path(reference_dir).name != "reference" or not saved.exists():
        return None
    section = (yaml.safe_load(saved.read_text()) or {}).get("score")
    return saved_score_config(section) if section else None
