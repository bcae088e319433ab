"""`expected` trainer: maximize the exact expected reward over the 10 labels (no sampling).

The policy is a distribution over 10 labels, so the RL objective needs no Monte-Carlo estimate:

    J(x)  = sum_k pi(k|x) r(k, s(x))                          (expected verifiable reward)
    KL(x) = sum_k pi(k|x) (log pi(k|x) - log pi_ref(k|x))     (exact KL over the finite action set)
    loss  = mean_x [ -J(x) + beta KL(x) ]

dJ/dz_k = pi_k (r_k - J) for logits z: the REINFORCE gradient (Williams 1992) with every action's reward
evaluated instead of one sampled, i.e. its zero-variance limit. Every record gives a gradient on all labels.

advantage "normalized": GRPO's advantage (r - mean_group) / std_group with the group being the whole label
distribution, i.e. A_k = (r_k - J) / sigma, sigma^2 = sum_k pi_k (r_k - J)^2, computed exactly:
    loss = mean_x [ -J(x) / sg(sigma(x) + eps) + beta KL(x) ]     (sg = stop-gradient)
whose gradient is sum_k pi_k A_k grad log pi_k. It rescales every record's reward differences to unit size,
so the quadratic reward (differences of ~1/81 between neighbouring labels) is not drowned by the KL term.
"""

from __future__ import annotations

import torch

from ehrjudge.train.rewards import exact_kl

NORM_EPS = 1e-4  # as GRPO's std epsilon (grpo.py): a record whose labels all earn the same reward adds nothing


def prepare(log_probs: torch.Tensor, rewards: torch.Tensor, config, generator: torch.Generator) -> dict:
    """Nothing to sample: the expectation is exact."""
    return {}


def loss(log_probs: torch.Tensor, rewards: torch.Tensor, ref_log_probs: torch.Tensor | None, state: dict,
         config) -> tuple[torch.Tensor, dict]:
    """log_probs, rewards, ref_log_probs: (B, 10). Returns (scalar loss, detached stats)."""
    probs = log_probs.exp()
    expected_reward = (probs * rewards).sum(-1)  # (B,)
    total = -expected_reward
    stats = {"reward/expected": expected_reward.mean().item()}
    if config.advantage == "normalized":
        sigma = (probs * (rewards - expected_reward[:, None]) ** 2).sum(-1).sqrt().detach()  # (B,)
        total = -expected_reward / (sigma + NORM_EPS)
        stats["reward/std_pi"] = sigma.mean().item()
    if ref_log_probs is not None:
        kl = exact_kl(log_probs, ref_log_probs)  # (B,)
        total = total + config.kl_coef * kl
        stats["train/kl"] = kl.mean().item()
    return total.mean(), stats
