"""One group-relative policy-gradient step on G sampled records (GRPO, Shao et al. 2024, eq. 3, with mu = 1).

    A_i   = (r_i - mean_g r) / (std_g r + eps)                  group-normalized advantage of completion i
    kl_it = exp(l_ref - l) - (l_ref - l) - 1                     per-token k3 estimate of KL(pi || pi_ref)
    loss  = -(1/G) sum_i (1/|o_i|) sum_t [ exp(l_it - sg(l_it)) A_i - beta kl_it ]

l = log pi(o_it | ...), l_ref under the warm-start policy (the RL adapter disabled), sg = stop-gradient. With one
update per sampled batch (mu = 1) the PPO ratio is exactly 1, so its clip never acts and is left out; the
gradient is the policy gradient A_i grad log pi. As TRL's GRPOTrainer, eps = 1e-4 and a group whose rewards are
all equal gets advantage 0.
"""

from __future__ import annotations

import torch

from ehrjudge.generator.policy import token_log_probs

STD_EPS = 1e-4


def advantages(rewards: torch.Tensor) -> torch.Tensor:
    """(G,) group-normalized advantages."""
    return (rewards - rewards.mean()) / (rewards.std() + STD_EPS)


def grpo_loss(policy, ids: torch.Tensor, mask: torch.Tensor, advantage: torch.Tensor,
              kl_coef: float) -> tuple[torch.Tensor, dict]:
    """The loss above and its parts, for completions `ids` (G, T) with completion `mask` (G, T)."""
    tokens = mask[:, 1:].float()  # (G, T-1)
    log_probs = token_log_probs(policy, ids, mask)  # (G, T-1)
    with torch.no_grad(), policy.disable_adapter():
        ref_log_probs = token_log_probs(policy, ids, mask)
    delta = (ref_log_probs - log_probs) * tokens
    kl = (delta.exp() - delta - 1.0) * tokens  # (G, T-1)
    ratio = (log_probs - log_probs.detach()).exp()
    per_token = ratio * advantage[:, None] - kl_coef * kl
    length = tokens.sum(1).clamp(min=1.0)
    loss = -((per_token * tokens).sum(1) / length).mean()
    return loss, {"rl/kl": (kl.detach().sum(1) / length).mean().item(), "rl/loss": loss.item(),
                  "rl/completion_tokens": length.mean().item()}
