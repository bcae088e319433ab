"""What the pair-trained methods share (Bradley-Terry reward model, pairwise judge): the preference pairs of a split,
pairwise accuracy, and the optimizer step loop (train/loop.py's helpers: LoRA set-up, schedule, checkpoints).

Pairs: every (chosen, rejected) of a split's records with s_chosen - s_rejected >= margin (s = realism_score), the
more realistic record chosen. Pairs with equal scores have no verifiable order and are never used.
"""

from __future__ import annotations

import logging
import math
import time
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from ehrjudge.errors import InputError
from ehrjudge.train.checkpoint import load_latest, save_checkpoint
from ehrjudge.train.config import TrainConfig
from ehrjudge.train.loop import schedule, step_budget

log = logging.getLogger(__name__)


def preference_pairs(scores, margin: int) -> np.ndarray:
    """(P, 2) record indices [chosen, rejected] of every pair with scores[chosen] - scores[rejected] >= margin."""
    if margin < 1:
        raise InputError(f"a pair margin must be >= 1 (equal scores have no order), got {margin}")
    scores = np.asarray(scores, dtype=float)
    chosen, rejected = np.nonzero(scores[:, None] - scores[None, :] >= margin)
    if len(chosen) == 0:
        raise InputError(f"no two records' realism scores differ by >= {margin}: no preference pairs",
                         column="realism_score")
    return np.stack([chosen, rejected], axis=1)


def sample_pairs(pairs: np.ndarray, n: int, seed: int) -> np.ndarray:
    """A seeded subset of `n` pairs without replacement (all of them, shuffled, when there are fewer)."""
    order = np.random.default_rng(seed).permutation(len(pairs))
    return pairs[order[:n]] if n > 0 else pairs[order]


def pair_accuracy(chosen_scores, rejected_scores) -> np.ndarray:
    """Per pair: 1 when the chosen record scores higher, 0.5 on a tie, 0 otherwise (mean = pairwise accuracy,
    higher is better, [0, 1]; 0.5 is chance)."""
    chosen, rejected = np.asarray(chosen_scores, dtype=float), np.asarray(rejected_scores, dtype=float)
    return (chosen > rejected) + 0.5 * (chosen == rejected)


def mean_with_interval(values, seed: int = 0, n_bootstrap: int = 1000) -> tuple[float, list[float] | None]:
    """(mean, 95% percentile-bootstrap interval) of per-item values (e.g. per-pair correctness); no interval for
    fewer than 2 items."""
    values = np.asarray(values, dtype=float)
    if len(values) < 2:
        return float(values.mean()), None
    rows = np.random.default_rng(seed).integers(len(values), size=(n_bootstrap, len(values)))
    means = values[rows].mean(axis=1)
    return float(values.mean()), [float(np.quantile(means, 0.025)), float(np.quantile(means, 0.975))]


def pair_batches(pairs: np.ndarray, batch_size: int, seed: int):
    """An endless stream of (B, 2) pair batches: a fresh seeded permutation of all pairs per epoch."""
    epoch = 0
    while True:
        order = np.random.default_rng([seed, epoch]).permutation(len(pairs))
        for start in range(0, len(order), batch_size):
            yield pairs[order[start:start + batch_size]]
        epoch += 1


def optimize(step_loss: Callable[[np.ndarray], tuple[torch.Tensor, dict]], module: torch.nn.Module,
             pairs: np.ndarray, config: TrainConfig, run_dir: Path, tracker,
             evaluate: Callable[[int], dict] | None = None, resume: bool = False, stop_at_step: int | None = None,
             kept: dict | None = None) -> dict:
    """AdamW over `module`'s trainable parameters, the RLVR trainers' warmup/decay schedule, gradient clipping and
    step checkpoints (train/checkpoint.py); `step_loss(pair batch)` returns (loss, stats).

    Budget: config.max_steps or config.epochs passes over the pairs, whichever ends first (loop.step_budget).
    resume: continue from run_dir's latest checkpoint (weights, optimizer, schedule, torch RNG, data position), so
    the run ends as an uninterrupted one would (with LoRA dropout on, only where no lower-layer cache is filled
    during training: a first-visit frozen pass draws dropout masks a resumed run draws in another order; the
    default lora_dropout is 0); stop_at_step simulates a kill right after that step (tests);
    `kept` (e.g. the pre-training evaluation) is saved in every checkpoint and returned as it was on resume.
    Returns {"steps", "budget", "losses" (per step), "train_seconds", "seconds_per_step_median", "last_eval" (the
    metrics of the evaluation at the last step, {} without `evaluate`), "kept"}, or {"stopped_by": "stop_at_step"}.
    """
    parameters = [p for p in module.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(parameters, lr=config.learning_rate, weight_decay=config.weight_decay)
    total_steps, budget = step_budget(config, math.ceil(len(pairs) / config.batch_size))
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, schedule(total_steps, config.warmup_steps))
    batches = pair_batches(pairs, config.batch_size, config.seed)
    losses, step_seconds, last_eval, done, seconds = [], [], {}, 0, 0.0
    kept = dict(kept or {})
    if resume:
        saved = load_latest(run_dir, module)
        optimizer.load_state_dict(saved["optimizer"])
        scheduler.load_state_dict(saved["scheduler"])
        torch.set_rng_state(saved["torch_rng"])
        done, losses, last_eval, seconds, kept = (saved["step"], saved["losses"], saved["last_eval"],
                                                  saved["seconds"], saved["kept"])
        for _ in range(done):  # the data position: the stream is a function of (seed, epoch) only
            next(batches)
        log.info("resumed from step %d", done)
    log.info("%d steps of %d pairs (%d pairs, budget: %s), %d trainable parameters", total_steps, config.batch_size,
             len(pairs), budget, sum(p.numel() for p in parameters))
    started = time.perf_counter() - seconds
    module.train()
    for step in range(done + 1, total_steps + 1):
        step_start = time.perf_counter()
        optimizer.zero_grad(set_to_none=True)
        loss, stats = step_loss(next(batches))
        loss.backward()
        if config.max_grad_norm > 0:
            torch.nn.utils.clip_grad_norm_(parameters, config.max_grad_norm)
        optimizer.step()
        scheduler.step()
        losses.append(loss.item())
        step_seconds.append(time.perf_counter() - step_start)
        if step % config.log_every == 0 or step == total_steps:
            tracker.log({"train/loss": losses[-1], "train/lr": scheduler.get_last_lr()[0],
                         "train/seconds_per_step": step_seconds[-1], **stats}, step)
        if evaluate is not None and (step % config.eval_every == 0 or step == total_steps):
            module.eval()
            last_eval = evaluate(step)
            tracker.log({f"eval/{k}": v for k, v in last_eval.items()}, step)
            module.train()
        if step % config.checkpoint_every == 0 or step == total_steps:
            state = {"step": step, "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                     "torch_rng": torch.get_rng_state(), "losses": losses, "last_eval": last_eval,
                     "seconds": time.perf_counter() - started, "kept": kept}
            save_checkpoint(run_dir, step, module, state, config.keep_checkpoints)
        if stop_at_step is not None and step >= stop_at_step:
            return {"stopped_by": "stop_at_step", "step": step}
    module.eval()
    return {"steps": total_steps, "budget": budget, "losses": losses, "train_seconds": time.perf_counter() - started,
            "seconds_per_step_median": float(np.median(step_seconds)) if step_seconds else None,
            "last_eval": last_eval, "kept": kept}
