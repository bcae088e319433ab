"""`reinforce` trainer: the original design's sampled policy gradient (Williams 1992).

One label a ~ pi(.|x) is sampled per record and scored with the verifiable reward r(a, s):

    A    = r                      (advantage "raw": the original's choice)
         | r - mean_batch(r)      (advantage "batch_mean": a baseline, for the ablation)
    loss = mean_x [ -A log pi(a|x) + beta KL(pi || pi_ref)(x) ]

The KL is computed exactly over the 10 labels (rewards.exact_kl) rather than estimated from the sample.
"""

from __future__ import annotations

import torch

from ehrjudge.train.rewards import exact_kl


def prepare(log_probs: torch.Tensor, rewards: torch.Tensor, config, generator: torch.Generator) -> dict:
    """Sample one label per record from the (detached) policy; compute its advantage."""
    actions = torch.multinomial(log_probs.detach().exp(), 1, generator=generator)  # (B, 1)
    reward = rewards.gather(1, actions).squeeze(1)  # (B,)
    if config.advantage == "batch_mean":
        advantage = reward - reward.mean()  # A = r - mean_batch r
    elif config.advantage == "normalized":
        advantage = (reward - reward.mean()) / (reward.std() + 1e-4)  # A = (r - mean_batch r) / std_batch r
    else:
        advantage = reward  # raw: A = r (the original)
    return {"actions": actions, "reward": reward, "advantage": advantage}


def loss(log_probs: torch.Tensor, rewards: torch.Tensor, ref_log_probs: torch.Tensor | None, state: dict,
         config) -> tuple[torch.Tensor, dict]:
    chosen = log_probs.gather(1, state["actions"]).squeeze(1)  # (B,) log pi(a|x)
    total = -state["advantage"] * chosen
    stats = {"reward/sampled": state["reward"].mean().item(), "train/advantage": state["advantage"].mean().item()}
    if ref_log_probs is not None:
        kl = exact_kl(log_probs, ref_log_probs)
        total = total + config.kl_coef * kl
        stats["train/kl"] = kl.mean().item()
    return total.mean(), stats
