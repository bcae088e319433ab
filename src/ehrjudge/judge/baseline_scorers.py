"""The cheap scorers shown beside the judge everywhere: the diagonal-z formula and the regressor, with throughput.

formula     d(x) = sqrt(sum_j z_j(x)^2),  z_j = (x_j - mean_j) / std_j  (ReferenceStats: the same reference means
            and population stds the judge's `deviations` prompt shows). Columns constant in the reference have no
            z and are left out, as the realism score's distances leave them out. A larger d is a less realistic
            record, so the formula's raw score is -log(d): strictly decreasing in d, so its Spearman with the
            verifiable score is exactly that of d (negated). For Pearson, MAE and the mean gap it is put on the
            1..10 scale by the increasing affine map of judge/calibration.py, fitted on the val split:
            formula_score = clip(a * (-log d) + b, 1, 10). The log because the verifiable score is linear in
            the log Mahalanobis distance (scoring/realism.py, quantile mapping).
regressor   a gradient-boosting (or ridge) regressor on the patient vectors, fitted on the train split
            (fit_regressor), its prediction rounded and clipped to 1..10.
facts       the same regressor on the numbers the judge's findings text shows (judge.findings.finding_facts: the
            deviation counts and largest |z|, the record checks, codes per table, with the patients the
            closest-patient ratio, and the score cap those imply), rounded and clipped alike. Not one of the
            issue's baselines: the fair one for a judge reading that text (docs/training.md), since it sees the
            same facts without a language model.
throughput  records/s of each scorer's scoring pass on the same records (fitting excluded), and of the
            verifiable realism score itself (scoring.realism, fitted on the dataset's reference and holdout
            with the dataset's ScoreConfig).
"""

from __future__ import annotations

import dataclasses
import logging
import time
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd

from ehrjudge.cohort.reference_stats import CONSTANT_TOLERANCE, ReferenceStats
from ehrjudge.cohort.schema import META_COLUMNS, Schema, validate_vectors
from ehrjudge.errors import InputError
from ehrjudge.io import read_table
from ehrjudge.judge.calibration import Calibration, fit_calibration
from ehrjudge.synth.config import SPLITS

log = logging.getLogger(__name__)

FORMULA, REGRESSOR, FACTS, VERIFIABLE = "formula", "regressor", "facts", "verifiable"
TRUE_SCORE = "realism_score"  # the verifiable score column of a judge dataset split
TINY_DISTANCE = 1e-12  # floor of d before the log: a record exactly at the reference mean


def load_split(dataset: Path, split: str, schema: Schema) -> tuple[pd.DataFrame, np.ndarray]:
    """(validated records with meta columns, true realism scores) of one dataset split."""
    if split not in SPLITS:
        raise InputError(f"unknown split {split!r}; choose one of {', '.join(SPLITS)}")
    path = dataset / f"{split}.parquet"
    frame = read_table(path)
    if TRUE_SCORE not in frame.columns:
        raise InputError("split has no realism_score column", file=path, column=TRUE_SCORE)
    keep = [c for c in frame.columns if c in META_COLUMNS] + schema.names
    missing = [n for n in schema.names if n not in frame.columns]
    if missing:
        raise InputError(f"split lacks {len(missing)} schema feature(s), e.g. {missing[:5]}", file=path,
                         column=missing[0])
    records = validate_vectors(frame[keep], schema, file=path)
    return records, frame[TRUE_SCORE].to_numpy(dtype=float)


def fit_regressor(kind: str, features: np.ndarray, target: np.ndarray, seed: int):
    """The regressor baseline fitted on (features, target): "ridge" (standardized RidgeCV) or gradient boosting."""
    from sklearn.ensemble import HistGradientBoostingRegressor
    from sklearn.linear_model import RidgeCV
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    if kind == "ridge":
        model = make_pipeline(StandardScaler(), RidgeCV(alphas=np.logspace(-3, 3, 13)))
    else:
        model = HistGradientBoostingRegressor(random_state=seed)
    return model.fit(features, target)


def diagonal_z_distance(matrix: np.ndarray, reference: ReferenceStats) -> np.ndarray:
    """sqrt(sum_j z_j^2) of every row of `matrix` (n, p) over the reference's non-constant columns -> (n,)."""
    matrix = np.asarray(matrix, dtype=np.float64)
    if matrix.ndim != 2 or matrix.shape[1] != len(reference.names):
        raise InputError(f"records have shape {matrix.shape}; the reference has {len(reference.names)} columns")
    used = reference.std > CONSTANT_TOLERANCE * np.maximum(1.0, np.abs(reference.mean))  # (p,)
    if not used.any():
        raise InputError("every column is constant in the reference; the formula has no z to sum")
    z = (matrix[:, used] - reference.mean[used]) / reference.std[used]  # (n, p_used)
    return np.sqrt(np.einsum("ij,ij->i", z, z))


def formula_raw_score(distance: np.ndarray) -> np.ndarray:
    """-log(d): higher is more realistic (what gets ranked and calibrated)."""
    return -np.log(np.maximum(distance, TINY_DISTANCE))


@dataclasses.dataclass(frozen=True)
class FormulaScorer:
    """The diagonal-z formula with its 1..10 map (None when the val split gave no increasing line)."""

    reference: ReferenceStats
    calibration: Calibration | None

    @classmethod
    def fit(cls, reference: ReferenceStats, val_matrix: np.ndarray, val_scores: np.ndarray) -> "FormulaScorer":
        raw = formula_raw_score(diagonal_z_distance(val_matrix, reference))
        return cls(reference, fit_calibration(raw, val_scores, f"val ({len(val_scores)} records)"))

    def score(self, matrix: np.ndarray) -> np.ndarray:
        """1..10 (continuous); without a calibration the raw -log d, still a valid ranking."""
        raw = formula_raw_score(diagonal_z_distance(matrix, self.reference))
        return raw if self.calibration is None else self.calibration(raw)


def records_per_second(score: Callable[[np.ndarray], object], matrix: np.ndarray) -> tuple[object, float]:
    """(what `score(matrix)` returns, records scored per second of that one call)."""
    start = time.perf_counter()
    result = score(matrix)
    return result, len(matrix) / max(time.perf_counter() - start, 1e-9)


@dataclasses.dataclass
class BaselineScorers:
    """The formula (calibrated on val), the regressor (fitted on train) and the verifiable scorer of one dataset."""

    names: list[str]
    n_train: int
    formula: FormulaScorer
    regressor: object  # a fitted scikit-learn regressor
    regressor_kind: str
    verifiable: object | None  # a fitted scoring.realism.RealismScorer, or None where the dataset has no reference
    facts: object | None = None  # the regressor on finding_facts; None where the statistics hold no value domains
    schema: Schema | None = None  # what finding_facts reads: the schema and the statistics (patients attached or not)
    reference: ReferenceStats | None = None

    @classmethod
    def fit(cls, dataset: Path, schema: Schema, reference: ReferenceStats,
            regressor_kind: str = "hist_gradient_boosting", seed: int = 0) -> "BaselineScorers":
        """Fit on the dataset's train (regressor) and val (formula map) splits."""
        dataset, names = Path(dataset), schema.names
        train_records, train_scores = load_split(dataset, "train", schema)
        val_records, val_scores = load_split(dataset, "val", schema)
        formula = FormulaScorer.fit(reference, val_records[names].to_numpy(dtype=np.float64), val_scores)
        regressor = fit_regressor(regressor_kind, train_records[names].to_numpy(), train_scores, seed)
        facts = None
        if reference.minimum is None:
            log.warning("baseline/facts the reference statistics hold no value domains (written before they "
                        "existed): no facts regressor")
        else:
            facts = fit_regressor(regressor_kind, facts_matrix(train_records, schema, reference), train_scores, seed)
        return cls(names, len(train_records), formula, regressor, regressor_kind, verifiable_scorer(dataset), facts,
                   schema, reference)

    def regressor_score(self, matrix: np.ndarray) -> np.ndarray:
        return np.clip(np.rint(self.regressor.predict(matrix)), 1, 10)

    def facts_score(self, matrix: np.ndarray) -> np.ndarray:
        """The facts regressor on (n, p) records in schema order (timed with its feature extraction)."""
        features = facts_matrix(pd.DataFrame(matrix, columns=self.names), self.schema, self.reference)
        return np.clip(np.rint(self.facts.predict(features)), 1, 10)

    def score(self, records: pd.DataFrame) -> tuple[pd.DataFrame, dict[str, float]]:
        """(formula_distance, formula_score, regressor_score per record; records/s of each and of the score)."""
        matrix = records[self.names].to_numpy(dtype=np.float64)  # (n, p)
        table = pd.DataFrame(index=records.index)
        speed = {}
        table["formula_distance"], _ = records_per_second(lambda m: diagonal_z_distance(m, self.formula.reference),
                                                          matrix)
        table["formula_score"], speed[FORMULA] = records_per_second(self.formula.score, matrix)
        table["regressor_score"], speed[REGRESSOR] = records_per_second(self.regressor_score, matrix)
        if self.facts is not None:
            table["facts_score"], speed[FACTS] = records_per_second(self.facts_score, matrix)
        if self.verifiable is not None:
            _, speed[VERIFIABLE] = records_per_second(self.verifiable.score, matrix)
        return table, speed


def facts_matrix(records: pd.DataFrame, schema: Schema, reference: ReferenceStats) -> np.ndarray:
    """finding_facts of `records`, with the closest-patient ratio whenever the patients are attached."""
    from ehrjudge.judge.findings import finding_facts

    return finding_facts(records, schema, reference, closest=reference.patients is not None)


def verifiable_scorer(dataset: Path):
    """The realism scorer the dataset was labelled with (its reference, holdout and ScoreConfig), for timing."""
    from ehrjudge.cohort.schema import Cohort
    from ehrjudge.scoring.config import dataset_score_config
    from ehrjudge.scoring.realism import ScoreConfig, fit_scorer

    if not (dataset / "reference" / "vectors.parquet").exists():
        return None
    holdout = Cohort.load(dataset / "holdout") if (dataset / "holdout" / "vectors.parquet").exists() else None
    config = dataset_score_config(dataset / "reference") or ScoreConfig()
    return fit_scorer(Cohort.load(dataset / "reference"), config, holdout)
