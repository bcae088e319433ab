"""Training the pairwise judge (judge/pairwise.py: two records, answer "A" or "B"), with an optional swap-consistency
reward.

The reward is the verdict's correctness, taken in exact expectation over the two answers (as the `expected`
trainer takes it over the 10 labels, train/expected.py), on [chosen, rejected] pairs of the train split (train/pairs.py)
shown in a random, seeded order:
    swap_consistency off:  J = p(right | A=first, B=second)                          each pair in one order
    swap_consistency on:   J = p(right | A=first, B=second) * p(right | A=second, B=first)
                             = E[1(right in both orders)]                              (the two answers independent)
                               + lambda * E[1(the same record chosen in both orders)]  (agreement_weight, 0 = J1)
    loss = -mean_pairs J
With p = p(right | given order) and p' = p(right | swapped), the agreement term is lambda * (p p' + (1-p)(1-p')):
a verdict that follows the records (right or wrong) earns lambda on every pair, a verdict that follows the position
earns nothing, so pairs too close for the judge to tell apart still teach it to ignore the order.
The second is the consistency reward of J1 (Whitehouse et al. 2025, pairwise judges trained on both orders, rewarded
only when the verdict survives the swap) and JudgeLM's swap augmentation (Zhu et al. 2023): a judge that prefers a
position earns nothing on a pair it gets right in one order only.
Each pair is seen once per epoch and prompts differ from pair to pair, so the lower layers are not cached (the whole
LoRA model runs every step; train/policy.py's cache pays off only for prompts seen every epoch).
Measured on the val split's pairs at every eval_every steps and before training (both orders each): accuracy,
consistent accuracy and the conflict rate (judge/pairwise.py).
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch

from ehrjudge.config import config_from_dict, to_dict
from ehrjudge.errors import InputError
from ehrjudge.io import write_json
from ehrjudge.judge.pairwise import (PAIR_LABELS, judge_pairs, oriented_pairs, pair_prompts, pairwise_prompt,
                                    swap_metrics)
from ehrjudge.judge.prompt import PromptConfig, needs_reference
from ehrjudge.train.preference_config import PairwiseConfig

log = logging.getLogger(__name__)
INFO_FILE = "pairwise.json"


def pairwise_loss(log_probs: torch.Tensor, right: torch.Tensor, swapped_log_probs: torch.Tensor | None = None,
                  agreement_weight: float = 0.0) -> tuple[torch.Tensor, dict]:
    """-mean J (module docstring). log_probs (B, 2) over ("A", "B"); right (B,) the right label's index in the
    given order (in the swapped order it is 1 - right); agreement_weight = lambda, read only with the swapped order."""
    p_right = log_probs.gather(1, right[:, None]).exp()[:, 0]  # (B,)
    stats = {"reward/p_right": p_right.mean().item()}
    reward = p_right
    if swapped_log_probs is not None:
        p_right_swapped = swapped_log_probs.gather(1, (1 - right)[:, None]).exp()[:, 0]  # (B,)
        both_right = p_right * p_right_swapped
        agree = both_right + (1 - p_right) * (1 - p_right_swapped)  # P(same record chosen in both orders)
        reward = both_right + agreement_weight * agree
        stats["reward/p_right_swapped"] = p_right_swapped.mean().item()
        stats["reward/agreement"] = agree.mean().item()
    stats["reward/mean"] = reward.mean().item()
    return -reward.mean(), stats


def split_texts(dataset_dir: Path, split: str, tokenizer, prompt: PromptConfig, schema, limit: int, seed: int):
    """(record texts, integer scores) of a split (train.data.load_split's seeded subset)."""
    from ehrjudge.judge.reference import dataset_reference
    from ehrjudge.judge.scoring import record_texts
    from ehrjudge.train.data import load_split

    loaded = load_split(dataset_dir, split, tokenizer, prompt, schema, limit=limit, seed=seed)
    reference = dataset_reference(dataset_dir, prompt.record_format) if needs_reference(prompt.record_format) else None
    return record_texts(loaded.frame, schema, tokenizer, prompt, reference), loaded.scores


def save_pairwise_judge(model, tokenizer, directory: Path, prompt: PromptConfig, base_model: str | None,
                        swap_consistency: bool) -> None:
    from ehrjudge.train.loop import save_model

    def extra(tmp: Path) -> None:
        write_json(tmp / INFO_FILE, {"method": "pairwise", "base_model": base_model, "labels": list(PAIR_LABELS),
                                     "swap_consistency": swap_consistency, "prompt": to_dict(prompt)})

    save_model(model, tokenizer, directory, extra)


def load_pairwise_judge(folder: str | Path, device: str = "auto"):
    """(model, tokenizer, pairwise PromptConfig) of a folder written by save_pairwise_judge (a run dir: final/)."""
    import json

    from ehrjudge.judge.model import load_judge

    folder = Path(folder)
    if not (folder / INFO_FILE).exists() and (folder / "final" / INFO_FILE).exists():
        folder = folder / "final"
    if not (folder / INFO_FILE).exists():
        raise InputError(f"not a pairwise judge folder (no {INFO_FILE})", file=folder)
    info = json.loads((folder / INFO_FILE).read_text())
    model, tokenizer = load_judge(str(folder), device)
    return model, tokenizer, config_from_dict(PromptConfig, info["prompt"], prefix="prompt.")


def train_pairwise(config: PairwiseConfig, model_and_tokenizer=None, resume: bool = False,
                   stop_at_step: int | None = None) -> dict:
    """Train the pairwise judge; returns the summary also written to OUT/summary.json.

    resume: from OUT's latest step checkpoint; stop_at_step simulates a kill after that step (tests)."""
    from ehrjudge.judge.labels import LabelScorer
    from ehrjudge.tracking import Tracker
    from ehrjudge.train.loop import open_run
    from ehrjudge.train.pairs import optimize, preference_pairs, sample_pairs

    base = config.base
    run_dir, _, model, tokenizer, dataset_dir, schema = open_run(config.output_dir, config, base, model_and_tokenizer)
    prompt = pairwise_prompt(base.prompt, config.instruction, config.suffix)
    train_texts, train_scores = split_texts(dataset_dir, "train", tokenizer, base.prompt, schema,
                                            base.train_records, base.seed)
    val_texts, val_scores = split_texts(dataset_dir, "val", tokenizer, base.prompt, schema, base.val_records,
                                        base.seed)
    # One step's worth of pairs per step of the budget (all pairs when max_steps is 0): each is seen once an epoch.
    wanted = base.max_steps * base.batch_size if base.max_steps > 0 else 0
    shown, first_better = oriented_pairs(sample_pairs(preference_pairs(train_scores, config.margin), wanted,
                                                      base.seed), base.seed)
    rows = np.column_stack([shown, first_better.astype(int)])  # (P, 3): first, second, first is better
    val_pairs, val_first_better = oriented_pairs(
        sample_pairs(preference_pairs(val_scores, config.margin), config.eval_pairs, base.seed + 1), base.seed + 1)
    scorer = LabelScorer(tokenizer, PAIR_LABELS)
    tracker = Tracker(run_dir, base.tracking, config, resume=resume)

    def step_loss(batch: np.ndarray):
        right = torch.as_tensor(1 - batch[:, 2], device=next(model.parameters()).device)  # 0 = "A" (first) is right
        log_probs = scorer.log_probs(model, pair_prompts(train_texts, batch[:, :2], tokenizer, prompt))  # (B, 2)
        swapped = (scorer.log_probs(model, pair_prompts(train_texts, batch[:, 1::-1], tokenizer, prompt))
                   if config.swap_consistency else None)
        return pairwise_loss(log_probs, right, swapped, config.agreement_weight)

    def evaluate(step: int) -> dict:
        p_forward, p_swapped = judge_pairs(model, tokenizer, val_texts, val_pairs, prompt, base.batch_size)
        return swap_metrics(p_forward, p_swapped, val_first_better)

    kept = {}
    if not resume:  # a resumed run reads its pre-training evaluation back from the checkpoint
        model.eval()
        kept["initial"] = evaluate(0)
        tracker.log({f"eval/{k}": v for k, v in kept["initial"].items()}, 0)
    result = optimize(step_loss, model, rows, base, run_dir, tracker, evaluate, resume, stop_at_step, kept)
    if "stopped_by" in result:
        tracker.close()
        return result
    initial, final = result["kept"]["initial"], result["last_eval"]  # optimize evaluates at the last step
    save_pairwise_judge(model, tokenizer, run_dir / "final", prompt, base.model, config.swap_consistency)
    tracker.close()
    summary = {"method": "pairwise", "swap_consistency": config.swap_consistency, "steps": result["steps"],
               "stopped_by": result["budget"], "train_seconds": result["train_seconds"],
               "seconds_per_step_median": result["seconds_per_step_median"], "train_pairs": int(len(rows)),
               "first_loss": result["losses"][0], "last_loss": result["losses"][-1],
               "initial_validation": initial, "final_validation": final, "dataset": str(dataset_dir),
               "run_dir": str(run_dir)}
    write_json(run_dir / "summary.json", summary)
    return summary
