"""Membership inference by a distance-threshold attack (Chen et al., "GAN-Leaks", CCS 2020; the
"presence disclosure" of medGAN, Choi et al. 2017).

The attacker holds real records, half of them members (the reference the generator learnt from), half
non-members (held out), and guesses "member" when the record's distance to its nearest synthetic record is
at most a threshold t. Scores: AUC of -distance (0.5 = no information, 1 = every member exposed) and
precision / recall / F1 at t = the median distance of the balanced pool (the attacker's natural guess when
half the pool are members). Distances live in the reference-standardized space of the realism score.
"""

from __future__ import annotations

import numpy as np
from sklearn.metrics import precision_recall_fscore_support, roc_auc_score

from ehrjudge.errors import MetricUndefinedError
from ehrjudge.scoring.knn import ExactKNN
from ehrjudge.scoring.metric import Metric

AUC = Metric("privacy/membership_auc", "minimize", 0.0, 1.0,
             "AUC of the distance-threshold membership attack (0.5 = no leak, 1 = members exposed)")
PRECISION = Metric("privacy/membership_precision", "minimize", 0.0, 1.0,
                   "precision of 'member' guesses at the median-distance threshold (0.5 = chance)")
RECALL = Metric("privacy/membership_recall", "minimize", 0.0, 1.0, "recall of members at that threshold")
F1 = Metric("privacy/membership_f1", "minimize", 0.0, 1.0, "F1 of the attack at that threshold")


def standardizer(reference: np.ndarray):
    """Column scaling fitted on the reference (constant columns keep scale 1)."""
    mean, std = reference.mean(axis=0), reference.std(axis=0)
    std = np.where(std > 0, std, 1.0)
    return lambda matrix: (matrix - mean) / std


def membership_metrics(members: np.ndarray, non_members: np.ndarray, synthetic: np.ndarray,
                       seed: int = 0, chunk_size: int = 2048) -> list[dict]:
    n = min(len(members), len(non_members))
    if n < 2:
        raise MetricUndefinedError("membership inference needs at least 2 reference and 2 held-out records")
    rng = np.random.default_rng(seed)
    pool_members = members[np.sort(rng.choice(len(members), n, replace=False))]
    pool_non_members = non_members[np.sort(rng.choice(len(non_members), n, replace=False))]
    scale = standardizer(members)
    index = ExactKNN(scale(synthetic), chunk_size)
    distances, _ = index.kneighbors(scale(np.vstack([pool_members, pool_non_members])), 1)
    distance = distances[:, 0]
    is_member = np.r_[np.ones(n, dtype=int), np.zeros(n, dtype=int)]
    threshold = float(np.median(distance))
    guess = (distance <= threshold).astype(int)
    precision, recall, f1, _ = precision_recall_fscore_support(is_member, guess, average="binary", zero_division=0)
    details = {"threshold": threshold, "n_members": n, "n_non_members": n,
               "median_distance_members": float(np.median(distance[:n])),
               "median_distance_non_members": float(np.median(distance[n:]))}
    return [AUC.result(roc_auc_score(is_member, -distance), **details),
            PRECISION.result(precision), RECALL.result(recall), F1.result(f1)]
