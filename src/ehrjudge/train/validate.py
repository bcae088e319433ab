"""Validation during training: agreement of the judge with the verifiable score, and collapse signals."""

from __future__ import annotations

import logging

import numpy as np
import torch

from ehrjudge.train.rewards import entropy, expected_label

log = logging.getLogger(__name__)


def judge_scores(log_probs: torch.Tensor, prediction: str) -> np.ndarray:
    """The judge's score per record: E_pi[k] (expected) or the most likely label (argmax)."""
    if prediction == "expected":
        return expected_label(log_probs).numpy()
    return (log_probs.argmax(-1) + 1).float().numpy()


def validate(policy, indices: list[int], targets: np.ndarray, batch_size: int, prediction: str,
             caps: np.ndarray | None = None) -> tuple[dict, np.ndarray]:
    """(metrics, expected score E_pi[k] per record) on the validation records; with `caps` (n,) the metrics and the
    expected score are min(that, cap), the capped score a judge trained with reward_after_caps is used by (and its
    calibration fitted on).

    metrics: Spearman/Pearson (higher is better, in [-1, 1]; an undefined one, e.g. constant judge, counts as -1),
    MAE (lower, [0, 9]), mean entropy, top-label share. The expected scores feed the judge's calibration.
    """
    from ehrjudge.judge.agreement import agreement

    with torch.no_grad():
        log_probs = torch.cat([policy.log_probs(indices[i:i + batch_size])
                               for i in range(0, len(indices), batch_size)])  # (n, 10)
    predicted = judge_scores(log_probs, prediction)
    if caps is not None:
        predicted = np.minimum(predicted, caps)
    counts = np.bincount(log_probs.argmax(-1).numpy(), minlength=10)
    # Few bootstrap resamples: validation only needs the point values; the test evaluation uses 1000.
    full = agreement(predicted, np.asarray(targets, dtype=float), seed=0, n_bootstrap=20)
    for name, reason in full["undefined"].items():
        log.warning("validation %s undefined: %s", name, reason)
    metrics = {name: (-1.0 if full[name] is None else full[name]) for name in ("spearman", "pearson")}
    metrics.update({name: full[name] for name in ("mae", "exact", "within_1")})
    metrics.update({"entropy": float(entropy(log_probs).mean()), "top_label": int(counts.argmax() + 1),
                    "top_label_share": float(counts.max() / counts.sum()),
                    "judge_mean": float(predicted.mean()), "score_mean": float(np.mean(targets))})
    expected = expected_label(log_probs).numpy()
    return metrics, expected if caps is None else np.minimum(expected, caps)
