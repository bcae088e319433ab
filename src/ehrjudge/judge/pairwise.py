"""The pairwise judge: one prompt shows two records (A, B) and asks which is more realistic; the answer is
constrained to the two labels "A" and "B", with exact probabilities (judge/labels.py's answer trie, as the 1..10
judge's), so p(A) + p(B) = 1.

Position bias is measured by swapping: every pair (first, second) is judged as (A=first, B=second) and as
(A=second, B=first). With v = the record the judge prefers (argmax label):
    accuracy          share of the 2P presentations whose verdict is the verifiably more realistic record
                      (higher is better, [0, 1]; 0.5 is chance)
    consistent        share of pairs judged right in both orders (higher is better, [0, 1])
    conflict rate     share of pairs whose verdict changes with the order, i.e. the same letter wins both times
                      (lower is better, [0, 1]; a judge that always answers "A" has conflict rate 1)
(Zheng et al. 2023, "Judging LLM-as-a-judge", position-consistency; JudgeLM, Zhu et al. 2023, swap augmentation.)

Balanced verdict (inference-time, no training): average the probability that the first record is better over the
two orders, p_bal = (p_A(first, second) + p_B(second, first)) / 2 = (p_A + 1 - p_A_swapped) / 2, and prefer the first
record when p_bal > 0.5 (the "balanced position calibration" of Wang et al. 2023, "Large Language Models are not Fair
Evaluators"). Its verdict cannot depend on the order (conflict rate 0 by construction) and costs the same two
forwards per pair that measuring the conflict rate does:
    balanced accuracy share of pairs whose balanced verdict is the verifiably more realistic record ([0, 1])
"""

from __future__ import annotations

import dataclasses

import numpy as np

from ehrjudge.judge.prompt import PromptConfig, build_prompt

PAIR_LABELS = ("A", "B")


def pairwise_prompt(prompt: PromptConfig, instruction: str, suffix: str) -> PromptConfig:
    """The judge's prompt settings (record format, token budget, system message) with the pairwise instruction."""
    return dataclasses.replace(prompt, instruction=instruction, suffix=suffix)


def pair_prompts(texts: list[str], pairs: np.ndarray, tokenizer, prompt: PromptConfig) -> list[str]:
    """One prompt per row (a, b) of `pairs` (P, 2): record texts[a] shown as A, texts[b] as B."""
    return [build_prompt(f"Record A:\n{texts[a]}\n\nRecord B:\n{texts[b]}", tokenizer, prompt)
            for a, b in np.asarray(pairs).tolist()]


def oriented_pairs(pairs: np.ndarray, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """([first, second] (P, 2), first_is_better (P,) bool) from [chosen, rejected] pairs, each flipped at random
    (seeded) so the better record is first in about half of them."""
    flip = np.random.default_rng(seed).random(len(pairs)) < 0.5
    oriented = np.where(flip[:, None], pairs[:, ::-1], pairs)
    return oriented, ~flip


def judge_pairs(model, tokenizer, texts: list[str], pairs: np.ndarray, prompt: PromptConfig,
                batch_size: int = 8) -> tuple[np.ndarray, np.ndarray]:
    """(p_A in the given order, p_A in the swapped order), (P,) each: P(first shown is more realistic)."""
    from ehrjudge.judge.scoring import judge_prompts

    pairs = np.asarray(pairs)
    forward = judge_prompts(model, tokenizer, pair_prompts(texts, pairs, tokenizer, prompt), batch_size,
                            description="pairwise judging", labels=PAIR_LABELS)  # (P, 2) log-probs
    swapped = judge_prompts(model, tokenizer, pair_prompts(texts, pairs[:, ::-1], tokenizer, prompt), batch_size,
                            description="pairwise judging (swapped)", labels=PAIR_LABELS)
    return np.exp(forward[:, 0]), np.exp(swapped[:, 0])


def swap_outcomes(p_a_forward, p_a_swapped, first_is_better) -> dict[str, np.ndarray]:
    """Per pair: right in the given order, right in the swapped order, conflict (bool arrays, (P,) each).

    In the given order "A" names the first record; swapped, "A" names the second one. A tie p_A = 0.5 counts as "B".
    """
    first_forward = np.asarray(p_a_forward) > 0.5  # verdict: the first record is better
    first_swapped = np.asarray(p_a_swapped) < 0.5  # swapped: "B" is the first record
    better = np.asarray(first_is_better, dtype=bool)
    return {"right_forward": first_forward == better, "right_swapped": first_swapped == better,
            "conflict": first_forward != first_swapped}


def balanced_right(p_a_forward, p_a_swapped, first_is_better) -> np.ndarray:
    """(P,) bool: the balanced verdict (module docstring) names the better record; a tie p_bal = 0.5 counts as the
    second record."""
    p_first = (np.asarray(p_a_forward, dtype=float) + 1.0 - np.asarray(p_a_swapped, dtype=float)) / 2.0
    return (p_first > 0.5) == np.asarray(first_is_better, dtype=bool)


def wilson_interval(hits: int, n: int, z: float = 1.959964) -> list[float] | None:
    """95 % Wilson score interval of a proportion hits / n (Wilson 1927): unlike a bootstrap it does not collapse to
    [0, 0] when no pair conflicts, which is where a conflict rate lives."""
    if n < 1:
        return None
    p, z2 = hits / n, z * z
    centre, half = (p + z2 / (2 * n)) / (1 + z2 / n), z * np.sqrt(p * (1 - p) / n + z2 / (4 * n * n)) / (1 + z2 / n)
    return [float(max(0.0, centre - half)), float(min(1.0, centre + half))]


def swap_metrics(p_a_forward, p_a_swapped, first_is_better) -> dict:
    """accuracy, consistent accuracy, conflict rate and balanced accuracy (see the module docstring), and the number
    of pairs."""
    outcome = swap_outcomes(p_a_forward, p_a_swapped, first_is_better)
    return {"accuracy": float(np.mean(np.concatenate([outcome["right_forward"], outcome["right_swapped"]]))),
            "consistent_accuracy": float(np.mean(outcome["right_forward"] & outcome["right_swapped"])),
            "conflict_rate": float(np.mean(outcome["conflict"])),
            "balanced_accuracy": float(np.mean(balanced_right(p_a_forward, p_a_swapped, first_is_better))),
            "n_pairs": int(len(outcome["conflict"]))}
