"""`expected` trainer: maximize the exact expected reward over the 10 labels (no sampling).

The policy is a distribution over 10 labels, so the RL objective needs no Monte-Carlo estimate:

    J(x)  = sum_k pi(k|x) r(k, s(x))                          (expected verifiable reward)
    KL(x) = sum_k pi(k|x) (log pi(k|x) - log pi_ref(k|x))     (exact KL over the finite action set)
    loss  = mean_x [ -J(x) + beta KL(x) ]

dJ/dz_k = pi_k (r_k - J) for logits z: the REINFORCE gradient (Williams 1992) with every action's reward
evaluated instead of one sampled, i.e. its zero-variance limit. Every record gives a gradient on all labels.
"""

from __future__ import annotations

import torch

from ehrjudge.train.rewards import exact_kl


def prepare(log_probs: torch.Tensor, rewards: torch.Tensor, config, generator: torch.Generator) -> dict:
    """Nothing to sample: the expectation is exact."""
    return {}


def loss(log_probs: torch.Tensor, rewards: torch.Tensor, ref_log_probs: torch.Tensor | None, state: dict,
         config) -> tuple[torch.Tensor, dict]:
    """log_probs, rewards, ref_log_probs: (B, 10). Returns (scalar loss, detached stats)."""
    expected_reward = (log_probs.exp() * rewards).sum(-1)  # (B,)
    total = -expected_reward
    stats = {"reward/expected": expected_reward.mean().item()}
    if ref_log_probs is not None:
        kl = exact_kl(log_probs, ref_log_probs)  # (B,)
        total = total + config.kl_coef * kl
        stats["train/kl"] = kl.mean().item()
    return total.mean(), stats
