"""Constrained generation: the model can only emit a valid label "1".."10" followed by its end-of-turn token.

The scoring path (labels.LabelScorer) reads the exact distribution and never generates; this path is for the
original's generate-then-parse usage and for models served by a `generate` API. There is no fallback value:
if the output is not a label (which the processor makes impossible), LabelGenerationError is raised.
Sampling here is locally normalized (each step's softmax renormalized over the allowed tokens), so its label
frequencies differ from the exact answer distribution of LabelScorer, which normalizes over whole sequences.
"""

from __future__ import annotations

import torch
from transformers import LogitsProcessor

from ehrjudge.judge.labels import LABELS, LabelScorer


class LabelGenerationError(RuntimeError):
    """Generated tokens are not one of the label sequences: an invariant broke, never papered over."""


class LabelLogitsProcessor(LogitsProcessor):
    """Masks every token that does not extend a prefix of some label sequence (label tokens + end token)."""

    def __init__(self, sequence_token_ids: list[list[int]], prompt_length: int):
        self.sequences = [tuple(s) for s in sequence_token_ids]
        self.prompt_length = prompt_length  # (left-padded) prompt width: generated tokens start here
        self.allowed: dict[tuple[int, ...], list[int]] = {}
        for sequence in self.sequences:
            for j in range(len(sequence)):
                nexts = self.allowed.setdefault(sequence[:j], [])
                if sequence[j] not in nexts:
                    nexts.append(sequence[j])

    def allowed_next_tokens(self, generated: tuple[int, ...]) -> list[int]:
        if generated not in self.allowed:
            raise LabelGenerationError(f"generated prefix {list(generated)} is not a prefix of any label")
        return self.allowed[generated]

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        mask = torch.full_like(scores, float("-inf"))  # (B, V)
        for row, ids in enumerate(input_ids[:, self.prompt_length:].tolist()):
            generated = tuple(ids)
            if generated in self.sequences:
                # Finished rows are padded by generate itself; any finite token keeps the softmax defined.
                mask[row, self.sequences[0][-1]] = 0.0
                continue
            mask[row, self.allowed_next_tokens(generated)] = 0.0
        return scores + mask


def parse_label(generated: list[int], scorer: LabelScorer) -> int:
    """The label whose token sequence (through the end token) starts `generated`; raises if there is none."""
    if scorer.end_id in generated:
        answer = generated[: generated.index(scorer.end_id) + 1]
        for label, sequence in zip(scorer.labels, scorer.sequence_token_ids):
            if answer == sequence:
                return label
    raise LabelGenerationError(f"generated tokens {generated} are not a valid label 1..10")


def generate_label(model, tokenizer, prompts: list[str], sample: bool = False, batch_size: int | None = None,
                   temperature: float = 1.0, generator_seed: int | None = None) -> list[int]:
    """Greedy (or sampled) constrained answers, one label in 1..10 per prompt."""
    scorer = LabelScorer(tokenizer, LABELS)
    device = next(model.parameters()).device
    if generator_seed is not None:
        torch.manual_seed(generator_seed)
    size = batch_size or len(prompts)
    max_new_tokens = max(len(s) for s in scorer.sequence_token_ids)
    labels: list[int] = []
    for start in range(0, len(prompts), size):
        batch = scorer.encode(prompts[start:start + size], device)
        width = batch["input_ids"].shape[1]
        processor = LabelLogitsProcessor(scorer.sequence_token_ids, prompt_length=width)
        sampling = {"do_sample": True, "temperature": temperature, "top_k": None, "top_p": None} if sample else \
            {"do_sample": False, "temperature": None, "top_k": None, "top_p": None}
        with torch.no_grad():
            out = model.generate(**batch, logits_processor=[processor], max_new_tokens=max_new_tokens,
                                 eos_token_id=scorer.end_id, pad_token_id=tokenizer.pad_token_id, **sampling)
        labels.extend(parse_label(row, scorer) for row in out[:, width:].tolist())
    return labels
