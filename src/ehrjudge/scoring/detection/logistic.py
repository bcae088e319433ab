"""Detection: can a classifier tell synthetic records from real ones? (a classifier two-sample test,
Lopez-Paz & Oquab 2017; SDMetrics' LogisticDetection, synthcity's detection metrics).

A logistic regression on reference-standardized columns separates real (reference) from synthetic records, with
equal numbers of each and stratified k-fold cross-validation; the out-of-fold AUC is 0.5 when the two are
indistinguishable and 1 when every synthetic record is spotted. The score is SDMetrics' normalization
    detection_score = 1 - (2 max(AUC, 0.5) - 1)          1 = indistinguishable, 0 = perfectly detected
"""

from __future__ import annotations

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import StratifiedKFold

from ehrjudge.errors import MetricUndefinedError
from ehrjudge.scoring.metric import Metric
from ehrjudge.scoring.privacy.membership import standardizer

AUC = Metric("detection/logistic_auc", "minimize", 0.0, 1.0,
             "out-of-fold AUC of a logistic regression telling synthetic from real (0.5 = indistinguishable)")
SCORE = Metric("detection/logistic_score", "maximize", 0.0, 1.0,
               "SDMetrics' LogisticDetection score 1 - (2 max(AUC, 0.5) - 1) (1 = indistinguishable)")


def detection_metrics(real: np.ndarray, synthetic: np.ndarray, seed: int = 0, folds: int = 3,
                      regularization: float = 1.0) -> list[dict]:
    n = min(len(real), len(synthetic))
    if n < 2 * folds:
        raise MetricUndefinedError(f"detection needs at least {2 * folds} real and synthetic records, got {n}")
    rng = np.random.default_rng([seed, 3])
    scale = standardizer(real)
    features = scale(np.vstack([real[rng.choice(len(real), n, replace=False)],
                                synthetic[rng.choice(len(synthetic), n, replace=False)]]))  # (2n, p)
    labels = np.r_[np.zeros(n, dtype=int), np.ones(n, dtype=int)]
    predicted = np.zeros(2 * n)
    for train, test in StratifiedKFold(folds, shuffle=True, random_state=seed).split(features, labels):
        model = LogisticRegression(C=regularization, max_iter=1000).fit(features[train], labels[train])
        predicted[test] = model.predict_proba(features[test])[:, 1]
    auc = float(roc_auc_score(labels, predicted))
    return [AUC.result(auc, n_per_class=n, folds=folds), SCORE.result(1.0 - (2.0 * max(auc, 0.5) - 1.0))]
