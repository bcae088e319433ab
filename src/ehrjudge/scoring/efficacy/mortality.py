"""Downstream utility for in-hospital mortality: train on synthetic, test on real (TSTR) vs train on real,
test on real (TRTR) (Esteban et al., "Real-valued (medical) time series generation with recurrent
conditional GANs", 2017). Classifier: standardized L2 logistic regression (scikit-learn), trained on all
columns but the label; the label is `is_dead >= 0.5`. AUROC on the held-out real set; gap = TRTR - TSTR.
"""

from __future__ import annotations

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from ehrjudge.errors import MetricUndefinedError
from ehrjudge.scoring.metric import Metric

TSTR = Metric("efficacy/tstr_auroc", "maximize", 0.0, 1.0,
              "AUROC on real held-out data of a model trained on synthetic")
TRTR = Metric("efficacy/trtr_auroc", "maximize", 0.0, 1.0,
              "AUROC on real held-out data of a model trained on real")
GAP = Metric("efficacy/auroc_gap", "minimize", -1.0, 1.0, "TRTR AUROC minus TSTR AUROC")


def _labels(matrix: np.ndarray, j: int, name: str) -> np.ndarray:
    labels = (matrix[:, j] >= 0.5).astype(int)
    if labels.min() == labels.max():
        raise MetricUndefinedError(f"the {name} set has a single {('negative', 'positive')[labels[0]]} class "
                                   "for the mortality label")
    return labels


def _auroc(train: np.ndarray, train_labels: np.ndarray, test: np.ndarray, test_labels: np.ndarray,
           regularization: float) -> float:
    model = make_pipeline(StandardScaler(), LogisticRegression(C=regularization, max_iter=2000))
    model.fit(train, train_labels)
    return float(roc_auc_score(test_labels, model.predict_proba(test)[:, 1]))


def mortality_metrics(real_train: np.ndarray, synthetic: np.ndarray, real_test: np.ndarray | None,
                      names: list[str], label: str = "is_dead", regularization: float = 0.1) -> list[dict]:
    if label not in names:
        raise MetricUndefinedError(f"no {label!r} column for the mortality task")
    if real_test is None:
        raise MetricUndefinedError("TSTR/TRTR need a held-out real test set (--holdout)")
    j = names.index(label)
    features = [i for i in range(len(names)) if i != j]
    test_labels = _labels(real_test, j, "held-out real")
    real_labels = _labels(real_train, j, "reference")
    synthetic_labels = _labels(synthetic, j, "synthetic")
    tstr = _auroc(synthetic[:, features], synthetic_labels, real_test[:, features], test_labels, regularization)
    trtr = _auroc(real_train[:, features], real_labels, real_test[:, features], test_labels, regularization)
    details = {"label": label, "n_test": int(len(test_labels)), "test_positive_rate": float(test_labels.mean()),
               "synthetic_positive_rate": float(synthetic_labels.mean())}
    return [TSTR.result(tstr, **details), TRTR.result(trtr, **details), GAP.result(trtr - tstr)]
