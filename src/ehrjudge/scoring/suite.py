"""The dataset-level evaluation suite: every metric of a synthetic record set against real data, as one report.

Parts (each can be switched off with `parts`), by what is compared:
    dimension    single columns: per-feature mean / variance / zero rate, prevalence correlation
    correlation  column pairs: correlation-matrix distance
    sparsity     whole table: non-zero code columns (NZC), share of zeros
    rules        whole table: clinical rule violations (scoring/rules.yaml)
    realism      per-record realism score summarized (mean score, near-copy rate)
    detection    whole table: classifier two-sample test (logistic regression AUC, SDMetrics' score)
    fidelity     alpha-precision / beta-recall (Alaa et al. 2022)
    privacy      membership inference, DCR / NNDR against the holdout (both need it), attribute inference,
                 authenticity
    efficacy     TSTR vs TRTR mortality AUROC (needs holdout)
Every metric carries goal and range; one that cannot be computed is reported with value null and its reason.
"""

from __future__ import annotations

import logging
from typing import Callable

import numpy as np
import pandas as pd

from ehrjudge.cohort.schema import Cohort
from ehrjudge.config import to_dict
from ehrjudge.errors import InputError, MetricUndefinedError
from ehrjudge.io import check_finite
from ehrjudge.scoring.column_pairs.correlation import CORRELATION, correlation_metrics
from ehrjudge.scoring.detection.logistic import AUC as DETECTION_AUC
from ehrjudge.scoring.detection.logistic import SCORE as DETECTION_SCORE
from ehrjudge.scoring.detection.logistic import detection_metrics
from ehrjudge.scoring.efficacy.mortality import GAP, TRTR, TSTR, mortality_metrics
from ehrjudge.scoring.fidelity.alpha_precision import (ALPHA_PRECISION, AUTHENTICITY, BETA_RECALL,
                                                        alpha_precision_metrics)
from ehrjudge.scoring.metric import Metric
from ehrjudge.scoring.privacy.attribute import ACCURACY, GAIN, attribute_metrics
from ehrjudge.scoring.privacy.dcr import CLOSE_SHARE, DCR_RATIO, NNDR, dcr_metrics
from ehrjudge.scoring.privacy.membership import AUC, F1, PRECISION, RECALL, membership_metrics
from ehrjudge.scoring.config import ScoreConfig, SuiteConfig
from ehrjudge.scoring.realism import RealismScorer
from ehrjudge.scoring.single_column.statistics import (MEAN, PREVALENCE, VARIANCE, ZERO_RATE, dimension_metrics,
                                                       feature_table, prevalence_metrics)
from ehrjudge.scoring.single_table.rules import load_rules, rule_metrics
from ehrjudge.scoring.single_table.sparsity import COVERAGE, EXTRA, ZERO_SHARE, sparsity_metrics

log = logging.getLogger(__name__)

REALISM_MEAN = Metric("realism/mean_score", "maximize", 1.0, 10.0, "mean realism_score of the synthetic records")
NEAR_COPY = Metric("realism/near_copy_rate", "minimize", 0.0, 1.0,
                   "share of synthetic records flagged as near copies of reference records")


def _run(metrics: list[Metric], compute: Callable[[], list[dict]]) -> list[dict]:
    """Results of `compute`, or every metric of the family marked undefined with the reason."""
    try:
        return compute()
    except MetricUndefinedError as exc:
        log.info("eval/undefined %s: %s", [m.name for m in metrics], exc)
        return [metric.undefined(str(exc)) for metric in metrics]


def _realism(reference: np.ndarray, synthetic: np.ndarray, holdout: np.ndarray | None,
             config: ScoreConfig, schema) -> list[dict]:
    try:
        scores = RealismScorer(config, schema).fit(reference, holdout).score(synthetic)
    except InputError as exc:  # e.g. a reference smaller than k: the metric is undefined on this input
        raise MetricUndefinedError(f"realism score: {exc}") from exc
    histogram = np.bincount(scores["realism_score"], minlength=11)[1:].tolist()
    return [REALISM_MEAN.result(scores["realism_score"].mean(), histogram=histogram,
                                mean_continuous=float(scores["realism_continuous"].mean())),
            NEAR_COPY.result(scores["near_copy"].mean(), near_copies=int(scores["near_copy"].sum()))]


def evaluate(reference: Cohort, records: pd.DataFrame, holdout: Cohort | None = None,
             config: SuiteConfig | None = None) -> dict:
    """The full report: {"metrics": [...], "features": [...], "counts": {...}, "config": {...}}."""
    config = config or SuiteConfig()
    schema, names = reference.schema, reference.schema.names
    if len(records) == 0:
        raise InputError("no synthetic records")
    schema.check_columns(records)
    check_finite(records, names)
    if holdout is not None and holdout.schema.names != names:
        raise InputError("holdout cohort columns differ from the reference")
    real = reference.matrix()
    synthetic = records[names].to_numpy(dtype=np.float64)
    held_out = holdout.matrix() if holdout is not None else None
    ids = records["record_id"].to_numpy() if "record_id" in records else np.arange(len(records))
    parts = set(config.parts)
    metrics: list[dict] = []
    if "dimension" in parts:
        metrics += _run([MEAN, VARIANCE, ZERO_RATE], lambda: dimension_metrics(real, synthetic, names))
        metrics += _run([PREVALENCE], lambda: prevalence_metrics(real, synthetic))
    if "correlation" in parts:
        metrics += _run([CORRELATION], lambda: correlation_metrics(real, synthetic))
    if "sparsity" in parts:
        metrics += _run([COVERAGE, EXTRA, ZERO_SHARE], lambda: sparsity_metrics(real, synthetic, schema))
    if "rules" in parts:
        metrics += rule_metrics(real, synthetic, schema, ids, load_rules(config.rules_file))
    if "realism" in parts:
        metrics += _run([REALISM_MEAN, NEAR_COPY], lambda: _realism(real, synthetic, held_out, config.score, schema))
    if "detection" in parts:
        metrics += _run([DETECTION_AUC, DETECTION_SCORE], lambda: detection_metrics(real, synthetic, config.seed))
    if "fidelity" in parts:
        metrics += _run([ALPHA_PRECISION, BETA_RECALL, AUTHENTICITY],
                        lambda: alpha_precision_metrics(real, synthetic, config.score.chunk_size))
    if "privacy" in parts:
        if held_out is None:
            metrics += [m.undefined("needs a held-out real set (--holdout)")
                        for m in (AUC, PRECISION, RECALL, F1, CLOSE_SHARE, DCR_RATIO, NNDR)]
        else:
            metrics += _run([AUC, PRECISION, RECALL, F1],
                            lambda: membership_metrics(real, held_out, synthetic, config.seed, config.score.chunk_size))
            metrics += _run([CLOSE_SHARE, DCR_RATIO, NNDR],
                            lambda: dcr_metrics(real, held_out, synthetic, config.score.chunk_size))
        metrics += _run([ACCURACY, GAIN], lambda: attribute_metrics(
            real, synthetic, schema, config.sensitive_columns, held_out, config.attribute_k, config.score.chunk_size))
    if "efficacy" in parts:
        metrics += _run([TSTR, TRTR, GAP], lambda: mortality_metrics(
            real, synthetic, held_out, names, config.mortality_label, config.regularization))
    report = {
        "counts": {"reference": len(real), "synthetic": len(synthetic),
                   "holdout": None if held_out is None else len(held_out), "features": len(names)},
        "metrics": metrics,
        "config": to_dict(config),
    }
    if config.per_feature and "dimension" in parts:
        report["features"] = feature_table(real, synthetic, names)
    return report


def metric_value(report: dict, name: str) -> float | None:
    """The value of one metric in a report (None where undefined); KeyError if the report lacks it."""
    for row in report["metrics"]:
        if row["name"] == name:
            return row["value"]
    raise KeyError(name)
