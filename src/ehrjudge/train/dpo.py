"""DPO on the judge's answers: the label at the verifiable score preferred to a label farther from it.

Per training record x with verifiable score s: chosen answer y_c = s, rejected answer y_r drawn uniformly from the
labels with |y_r - s| >= margin (DPOConfig). Policy pi = the LoRA judge, reference pi_ref = the same model with the
adapter disabled (frozen base), as TRL does for a PEFT model.

    logit = (log pi(y_c|x) - log pi_ref(y_c|x)) - (log pi(y_r|x) - log pi_ref(y_r|x))
    loss  = mean_x -log sigma(beta * logit)                   (Rafailov et al. 2023, eq. 7)

Transcribed from TRL's DPOTrainer (huggingface/trl, trl/trainer/dpo_trainer.py at 9d58faa, loss_type "sigmoid":
`per_sequence_loss = -F.logsigmoid(self.beta * delta_log_odds)` with `delta_log_odds = chosen_logratios -
rejected_logratios`; the reference of a PEFT model computed under `model.disable_adapter()`; default beta 0.1).
TRL sums the completion tokens' log-probs; here log pi(y|x) is the judge's exact answer log-prob renormalized over
the 10 labels (judge/labels.py). The renormalizer log Z(x) is the same for y_c and y_r, so it cancels in
log pi(y_c|x) - log pi(y_r|x), and the DPO logit is exactly the one of the full answer sequences.
beta is the inverse temperature of the implicit reward beta * log(pi/pi_ref): DPO is the optimum of
max E[r] - beta KL(pi || pi_ref), so a larger beta keeps the judge nearer its reference.

The run is an RLVR run with another loss (train/loop.py: same records, budget, validation by the expected score
E_pi[k] = sum_k k pi(k|x), calibration on val, best/ and final/ judge folders), so it is compared with the RLVR
`expected` method at the same budget. OUT/config.yaml holds the base TrainConfig, OUT/dpo.yaml the DPO settings.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import torch
import torch.nn.functional as F

from ehrjudge.config import save_config
from ehrjudge.errors import ConfigError
from ehrjudge.train.preference_config import DPOConfig
from ehrjudge.train.rewards import exact_kl

N_LABELS = 10


def dpo_loss(chosen_logps: torch.Tensor, rejected_logps: torch.Tensor, ref_chosen_logps: torch.Tensor,
             ref_rejected_logps: torch.Tensor, beta: float) -> tuple[torch.Tensor, dict]:
    """(mean -log sigma(beta * logit), detached stats); every input (B,)."""
    chosen_rewards = beta * (chosen_logps - ref_chosen_logps)  # implicit rewards, (B,)
    rejected_rewards = beta * (rejected_logps - ref_rejected_logps)
    losses = -F.logsigmoid(chosen_rewards - rejected_rewards)  # beta * logit = difference of implicit rewards
    margin = (chosen_rewards - rejected_rewards).detach()
    return losses.mean(), {"reward/chosen": chosen_rewards.mean().item(),
                           "reward/rejected": rejected_rewards.mean().item(), "reward/margin": margin.mean().item(),
                           "reward/accuracy": (margin > 0).float().mean().item()}


class DPOMethod:
    """The trainer interface of train/loop.py (prepare, loss) for DPO; pi_ref is always computed."""

    name = "dpo"
    needs_reference = True

    def __init__(self, config: DPOConfig):
        if not 1 <= config.margin <= N_LABELS // 2:
            raise ConfigError(f"dpo margin must be in 1..{N_LABELS // 2} (every score then has a label that far), "
                              f"got {config.margin}")
        self.beta, self.margin = config.beta, config.margin

    def prepare(self, log_probs: torch.Tensor, rewards: torch.Tensor, config, generator: torch.Generator) -> dict:
        """The pair of answers per record: chosen = the verifiable score (where every reward shape peaks), rejected
        drawn uniformly from the labels at distance >= margin. Indices 0..9, (B,) each."""
        chosen = rewards.argmax(-1)  # (B,)
        distance = (torch.arange(N_LABELS)[None] - chosen[:, None]).abs()  # (B, 10)
        allowed = (distance >= self.margin).float()
        rejected = torch.multinomial(allowed, 1, generator=generator).squeeze(-1)  # (B,)
        return {"chosen": chosen, "rejected": rejected}

    def loss(self, log_probs: torch.Tensor, rewards: torch.Tensor, ref_log_probs: torch.Tensor, state: dict,
             config) -> tuple[torch.Tensor, dict]:
        """log_probs, ref_log_probs: (B, 10). DPO, plus base.kl_coef * exact KL when that is > 0."""
        chosen, rejected = state["chosen"][:, None], state["rejected"][:, None]
        total, stats = dpo_loss(log_probs.gather(1, chosen)[:, 0], log_probs.gather(1, rejected)[:, 0],
                                ref_log_probs.gather(1, chosen)[:, 0], ref_log_probs.gather(1, rejected)[:, 0],
                                self.beta)
        if config.kl_coef > 0:
            kl = exact_kl(log_probs, ref_log_probs)  # (B,)
            total = total + config.kl_coef * kl.mean()
            stats["train/kl"] = kl.mean().item()
        return total, stats


def train_dpo(config: DPOConfig, model_and_tokenizer=None, show_progress: bool = False, resume: bool = False) -> dict:
    """A DPO run of train.loop.train into config.output_dir (resume: from its latest checkpoint); returns its
    summary."""
    from ehrjudge.train.loop import train

    method = DPOMethod(config)
    Path(config.output_dir).mkdir(parents=True, exist_ok=True)
    save_config(config, Path(config.output_dir) / "dpo.yaml")
    base = dataclasses.replace(config.base, output_dir=config.output_dir)
    return train(base, resume=resume, model_and_tokenizer=model_and_tokenizer, show_progress=show_progress,
                 method_module=method)
