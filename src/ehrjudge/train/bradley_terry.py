"""Bradley-Terry reward model: the judge's base model with LoRA and a linear head giving one scalar per record.

    r(x)          = w . h(x) + b            h(x): final (normed) hidden state at the prompt's last token, (H,)
    P(a > b)      = sigma(r(a) - r(b))      (Bradley & Terry 1952)
    loss          = mean over pairs of -log sigma(r(chosen) - r(rejected))
                                            (Ouyang et al. 2022, eq. 1)
as TRL's RewardTrainer computes it (huggingface/trl, trl/trainer/reward_trainer.py at 00b6d2b, compute_loss:
`-nn.functional.logsigmoid(rewards_chosen - rewards_rejected).mean()`, the reward being a sequence-classification
head read at the last non-padding token, which is what h(x) is here; its optional margin and reward-centering terms
are not used).
Pairs are training records whose verifiable scores differ by >= margin, the more realistic one chosen
(train/pairs.py). The scalar has no scale of its own (the loss sees only differences), so it is put on 1..10 by the
judge's calibration step (judge/calibration.py: the least-squares increasing line, fitted on val).
The prompt is the judge's (the record text, same instruction): only the head differs, so the lower-layer cache of
train/policy.py serves it too (LabelPolicy.last_hidden).

Saved folder (final/): the LoRA adapter (or full weights), tokenizer, head.pt, calibration.json and reward.json
(prompt, base model, hidden size), read back by `RewardModel.load`.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ehrjudge.config import config_from_dict, to_dict
from ehrjudge.errors import InputError, MetricUndefinedError
from ehrjudge.io import write_json
from ehrjudge.judge.agreement import correlation
from ehrjudge.judge.calibration import fit_calibration, save_calibration, saved_calibration
from ehrjudge.judge.prompt import PromptConfig
from ehrjudge.train.preference_config import BradleyTerryConfig

log = logging.getLogger(__name__)
HEAD_FILE, INFO_FILE = "head.pt", "reward.json"


def bradley_terry_loss(chosen_rewards: torch.Tensor, rejected_rewards: torch.Tensor) -> torch.Tensor:
    """mean -log sigma(r_chosen - r_rejected) over the pairs, (P,) each."""
    return -F.logsigmoid(chosen_rewards - rejected_rewards).mean()


class RewardModel(torch.nn.Module):
    """The backbone (LoRA judge model) and the linear reward head; named_parameters covers both (checkpoints)."""

    def __init__(self, backbone, hidden_size: int):
        super().__init__()
        self.backbone = backbone
        self.head = torch.nn.Linear(hidden_size, 1)
        torch.nn.init.normal_(self.head.weight, std=hidden_size ** -0.5)  # r starts O(1), not 0: every weight moves
        torch.nn.init.zeros_(self.head.bias)

    def rewards(self, policy, indices: list[int]) -> torch.Tensor:
        """(B,) r(x) of the policy's records `indices`; differentiable under grad."""
        hidden = policy.last_hidden(indices)  # (B, H)
        return self.head(hidden.to(self.head.weight.dtype)).squeeze(-1)

    def score_prompts(self, tokenizer, prompts: list[str], batch_size: int = 8) -> np.ndarray:
        """(N,) raw rewards of full prompts, no grad (the whole model per batch)."""
        from ehrjudge.judge.forward import last_hidden
        from ehrjudge.judge.labels import LabelScorer

        scorer = LabelScorer(tokenizer)
        out = []
        with torch.no_grad():
            for start in range(0, len(prompts), batch_size):
                ids = scorer.tokenize(prompts[start:start + batch_size])
                hidden = last_hidden(self.backbone, ids, scorer.pad_id)
                out.append(self.head(hidden.to(self.head.weight.dtype)).squeeze(-1).double().cpu().numpy())
        return np.concatenate(out)


@dataclasses.dataclass
class SavedRewardModel:
    """A trained reward model read from its folder, with its prompt and calibration."""

    model: RewardModel
    tokenizer: object
    prompt: PromptConfig
    calibration: object  # judge.calibration.Calibration | None

    def score(self, records, schema, reference=None, batch_size: int = 8) -> tuple[np.ndarray, np.ndarray]:
        """(raw reward, 1..10 calibrated score; the raw reward where no calibration was fitted) per record."""
        from ehrjudge.judge.scoring import record_prompts

        prompts = record_prompts(records, schema, self.tokenizer, self.prompt, reference)
        raw = self.model.score_prompts(self.tokenizer, prompts, batch_size)
        return raw, (raw if self.calibration is None else self.calibration(raw))


def save_reward_model(reward_model: RewardModel, tokenizer, directory: Path, prompt: PromptConfig,
                      base_model: str | None, calibration) -> None:
    """The adapter (train.loop.save_model), head, calibration and reward.json, in one atomic folder."""
    from ehrjudge.train.loop import save_model

    def extra(tmp: Path) -> None:
        torch.save(reward_model.head.state_dict(), tmp / HEAD_FILE)
        save_calibration(calibration, tmp)
        write_json(tmp / INFO_FILE, {"method": "bradley_terry", "base_model": base_model,
                                     "hidden_size": reward_model.head.in_features, "prompt": to_dict(prompt)})

    save_model(reward_model.backbone, tokenizer, directory, extra)


def load_reward_model(folder: str | Path, device: str = "auto") -> SavedRewardModel:
    """A folder written by save_reward_model (a run dir is read at its final/)."""
    from ehrjudge.judge.model import load_judge

    folder = Path(folder)
    if not (folder / INFO_FILE).exists() and (folder / "final" / INFO_FILE).exists():
        folder = folder / "final"
    path = folder / INFO_FILE
    if not path.exists():
        raise InputError("not a Bradley-Terry reward model folder (no reward.json)", file=folder)
    info = json.loads(path.read_text())
    backbone, tokenizer = load_judge(str(folder), device)
    model = RewardModel(backbone, int(info["hidden_size"]))
    model.head.load_state_dict(torch.load(folder / HEAD_FILE, weights_only=True))
    model.head.to(next(backbone.parameters()).device)
    model.eval()
    prompt = config_from_dict(PromptConfig, info["prompt"], prefix="prompt.")
    return SavedRewardModel(model, tokenizer, prompt, saved_calibration(folder))


def policy_rewards(reward_model: RewardModel, policy, indices: list[int], batch_size: int) -> np.ndarray:
    """(n,) rewards of the policy's records, no grad."""
    with torch.no_grad():
        return torch.cat([reward_model.rewards(policy, indices[i:i + batch_size])
                          for i in range(0, len(indices), batch_size)]).double().cpu().numpy()


def train_bradley_terry(config: BradleyTerryConfig, model_and_tokenizer=None, resume: bool = False,
                        stop_at_step: int | None = None) -> dict:
    """Train the reward model on the train split's pairs; returns the summary also written to OUT/summary.json.

    resume: from OUT's latest step checkpoint; stop_at_step simulates a kill after that step (tests)."""
    from ehrjudge.tracking import Tracker
    from ehrjudge.train.data import load_split
    from ehrjudge.train.loop import open_run
    from ehrjudge.train.pairs import optimize, preference_pairs
    from ehrjudge.train.policy import LabelPolicy

    base = config.base
    run_dir, _, model, tokenizer, dataset_dir, schema = open_run(config.output_dir, config, base, model_and_tokenizer)
    train_split = load_split(dataset_dir, "train", tokenizer, base.prompt, schema, limit=base.train_records,
                             seed=base.seed)
    val_split = load_split(dataset_dir, "val", tokenizer, base.prompt, schema, limit=base.val_records, seed=base.seed)
    policy = LabelPolicy(model, tokenizer, train_split.prompts + val_split.prompts, base.train_layers,
                         base.cache_lower_layers)
    reward_model = RewardModel(model, model.config.hidden_size).to(policy.device)
    pairs = preference_pairs(train_split.scores, config.margin)  # (P, 2) indices into the train split
    val_indices = list(range(len(train_split), len(train_split) + len(val_split)))
    tracker = Tracker(run_dir, base.tracking, config, resume=resume)

    def step_loss(batch: np.ndarray):
        records = np.unique(batch)  # each record forwarded once per step
        rewards = reward_model.rewards(policy, records.tolist())  # (R,)
        position = {record: i for i, record in enumerate(records.tolist())}
        chosen = rewards[[position[i] for i in batch[:, 0].tolist()]]  # (B,)
        rejected = rewards[[position[i] for i in batch[:, 1].tolist()]]  # (B,)
        margin = (chosen - rejected).detach()
        return bradley_terry_loss(chosen, rejected), {"reward/margin": margin.mean().item(),
                                                      "reward/accuracy": (margin > 0).float().mean().item()}

    def evaluate(step: int) -> dict:
        values = policy_rewards(reward_model, policy, val_indices, base.batch_size)
        try:
            return {"spearman": correlation("spearman", values, val_split.scores.astype(float))}
        except MetricUndefinedError as error:
            log.warning("validation Spearman at step %d undefined: %s", step, error)
            return {}

    result = optimize(step_loss, reward_model, pairs, base, run_dir, tracker, evaluate, resume, stop_at_step)
    if "stopped_by" in result:
        tracker.close()
        return result
    val_rewards = policy_rewards(reward_model, policy, val_indices, base.batch_size)
    calibration = fit_calibration(val_rewards, val_split.scores, f"val ({len(val_split)} records) at step "
                                                                 f"{result['steps']}")
    save_reward_model(reward_model, tokenizer, run_dir / "final", base.prompt, base.model, calibration)
    tracker.close()
    summary = {"method": "bradley_terry", "steps": result["steps"], "stopped_by": result["budget"],
               "train_seconds": result["train_seconds"], "seconds_per_step_median": result["seconds_per_step_median"],
               "train_records": len(train_split), "val_records": len(val_split), "pairs": int(len(pairs)),
               "first_loss": result["losses"][0], "last_loss": result["losses"][-1],
               "val_spearman": result["last_eval"].get("spearman"),
               "calibration": dataclasses.asdict(calibration) if calibration else None,
               "dataset": str(dataset_dir), "run_dir": str(run_dir)}
    write_json(run_dir / "summary.json", summary)
    return summary
