"""Warm start: supervised fine-tuning of the policy on the reference records' text, then merged into the weights.

    loss = -(1 / N_tok) sum_i sum_t log pi(o_it | PROMPT, o_i,<t)     over text + EOS tokens of a batch

The LoRA adapter is merged afterwards (W <- W + (alpha / r) B A), so the RL adapter starts from a plain model and
`disable_adapter()` gives back the warm-start policy for the KL term. SFT is where memorization begins: the
near-copy rate of the warm start is reported beside every tuned generator.
"""

from __future__ import annotations

import logging
import time

import numpy as np
import torch

from ehrjudge.generator.policy import add_lora, encode, token_log_probs

log = logging.getLogger(__name__)


def warm_start(model, tokenizer, texts: list[str], config) -> tuple[object, list[dict]]:
    """(model with the warm-start LoRA adapter, per-step log) after `config.sft_steps` steps; merge it with
    `merge_and_unload()` once the adapter is saved."""
    model = add_lora(model, config.lora_r, config.lora_alpha, config.train_layers, config.seed)
    parameters = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(parameters, lr=config.sft_learning_rate, weight_decay=0.0)
    warmup = max(1, config.sft_steps // 10)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: min(1.0, (step + 1) / warmup))
    rng = np.random.default_rng(config.seed)
    order: list[int] = []
    history = []
    model.train()
    for step in range(config.sft_steps):
        if len(order) < config.sft_batch_size:  # epochs: a fresh permutation when the current one runs out
            order += rng.permutation(len(texts)).tolist()
        batch, order = order[:config.sft_batch_size], order[config.sft_batch_size:]
        start = time.perf_counter()
        ids, mask = encode(tokenizer, [texts[i] for i in batch])
        log_probs = token_log_probs(model, ids, mask)
        loss = -log_probs.sum() / mask[:, 1:].sum()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if config.max_grad_norm > 0:
            torch.nn.utils.clip_grad_norm_(parameters, config.max_grad_norm)
        optimizer.step()
        schedule.step()
        history.append({"step": step + 1, "sft/loss": loss.item(), "sft/seconds": time.perf_counter() - start,
                        "sft/tokens": int(mask.sum())})
        if (step + 1) % 10 == 0 or step + 1 == config.sft_steps:
            log.info("warm start step %d/%d loss %.3f (%.1f s/step)", step + 1, config.sft_steps, loss.item(),
                     history[-1]["sft/seconds"])
    model.eval()
    return model, history
