"""Verifiable rewards over the 10 labels and the exact KL over that finite action set."""

from __future__ import annotations

import torch

N_LABELS = 10
LABELS = torch.arange(1, N_LABELS + 1, dtype=torch.float32)  # label k sits at column k-1


def reward_table(scores: torch.Tensor, shape: str, caps: torch.Tensor | None = None) -> torch.Tensor:
    """(B,) realism scores in 1..10 -> (B, 10) reward r(a_k, s) of answering label k, a_k = k, or with `caps` (B,)
    a_k = min(k, cap): the answer as capped_score will read it (judge/scoring.py), so answers at or above a record's
    cap all earn what the cap earns and the judge is not taught the caps its prompt states
    (TrainConfig.reward_after_caps).

    quadratic: r = 1 - (|a_k - s| / 9)^2   (the original design's reward)
    absolute:  r = 1 - |a_k - s| / 9
    exact:     r = 1[|a_k - s| < 0.5]
    All lie in [0, 1]; higher is better.
    """
    answers = LABELS.to(scores.device)[None, :]  # (1, 10)
    if caps is not None:
        answers = torch.minimum(answers, caps.float()[:, None])  # (B, 10)
    distance = (answers - scores.float()[:, None]).abs()  # (B, 10)
    if shape == "quadratic":
        return 1.0 - (distance / 9.0) ** 2
    if shape == "absolute":
        return 1.0 - distance / 9.0
    if shape == "exact":
        return (distance < 0.5).float()
    raise ValueError(f"unknown reward shape {shape!r}")


def exact_kl(log_probs: torch.Tensor, ref_log_probs: torch.Tensor) -> torch.Tensor:
    """KL(pi || pi_ref) = sum_k pi(k) (log pi(k) - log pi_ref(k)), exact over the 10 labels. (B, 10) -> (B,).

    With a finite action set the KL needs no estimator (GRPO's k3 estimator, Schulman 2020, exists for
    sampled tokens of an open vocabulary); its gradient is exact too.
    """
    return (log_probs.exp() * (log_probs - ref_log_probs)).sum(-1)


def entropy(log_probs: torch.Tensor) -> torch.Tensor:
    """H(pi) = -sum_k pi(k) log pi(k), in nats, (B, 10) -> (B,); 0 = collapsed, log 10 = uniform."""
    return -(log_probs.exp() * log_probs).sum(-1)


def expected_label(log_probs: torch.Tensor) -> torch.Tensor:
    """E_pi[k] = sum_k k pi(k), (B, 10) -> (B,) in [1, 10]."""
    return (log_probs.exp() * LABELS.to(log_probs.device)).sum(-1)
