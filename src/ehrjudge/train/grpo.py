"""`grpo` trainer: Group Relative Policy Optimization (Shao et al. 2024, DeepSeekMath, eq. 3).

G labels a_1..a_G ~ pi_old(.|x) per record; group-normalized advantage and PPO-clipped ratio
(Schulman et al. 2017):

    A_i   = (r_i - mean_g(r)) / (std_g(r) + eps)
    rho_i = pi(a_i|x) / pi_old(a_i|x)
    loss  = mean_x [ -mean_i min(rho_i A_i, clip(rho_i, 1-e, 1+e) A_i) + beta KL(pi || pi_ref)(x) ]

pi_old is the policy that sampled (detached at sampling time); with `grpo_iterations` = 1 the ratio is 1
and the clip only acts from the second update on the same samples. The KL is exact over the 10 labels
(rewards.exact_kl) instead of GRPO's per-token k3 estimate.

Why not TRL's GRPOTrainer: it generates completions token by token and re-scores them with the policy and
the reference. benchmarks/trl_grpo_step.py (TRL 1.16.0, same model, LoRA, KL 0.05 and prompts; 2 AVX2 cores,
AMD EPYC Zen 2, 2026-12-01): TRL 36.1 s per step of 2 prompts x 4 completions of 4 tokens (18.1 s a record;
50.3 s with its default activation checkpointing), of which no completion is constrained to the labels.
This loop samples G labels from the exact 10-label distribution of one forward: 2.14 s per step of 8 records
x G = 4 with the cached lower layers (0.27 s a record, 68x faster; 0.99 s a record on a record's first
visit, which includes the frozen pass: 18x), the same cost as `expected`.
"""

from __future__ import annotations

import torch

from ehrjudge.train.rewards import exact_kl

STD_EPS = 1e-4  # as TRL's GRPOTrainer; a group with identical rewards gets advantage 0


def prepare(log_probs: torch.Tensor, rewards: torch.Tensor, config, generator: torch.Generator) -> dict:
    """Sample G labels per record from the detached policy; group-normalized advantages."""
    old = log_probs.detach()
    actions = torch.multinomial(old.exp(), config.group_size, replacement=True, generator=generator)  # (B, G)
    reward = rewards.gather(1, actions)  # (B, G)
    advantage = (reward - reward.mean(1, keepdim=True)) / (reward.std(1, keepdim=True) + STD_EPS)  # (B, G)
    return {"actions": actions, "reward": reward, "advantage": advantage, "old_log_probs": old.gather(1, actions)}


def loss(log_probs: torch.Tensor, rewards: torch.Tensor, ref_log_probs: torch.Tensor | None, state: dict,
         config) -> tuple[torch.Tensor, dict]:
    chosen = log_probs.gather(1, state["actions"])  # (B, G)
    ratio = (chosen - state["old_log_probs"]).exp()
    advantage = state["advantage"]
    clipped = ratio.clamp(1.0 - config.clip_eps, 1.0 + config.clip_eps)
    surrogate = torch.minimum(ratio * advantage, clipped * advantage).mean(1)  # (B,)
    total = -surrogate
    stats = {"reward/sampled": state["reward"].mean().item(),
             "train/clip_fraction": ((ratio - clipped).abs() > 1e-8).float().mean().item()}
    if ref_log_probs is not None:
        kl = exact_kl(log_probs, ref_log_probs)
        total = total + config.kl_coef * kl
        stats["train/kl"] = kl.mean().item()
    return total.mean(), stats
