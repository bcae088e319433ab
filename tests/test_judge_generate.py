"""Constrained generation only ever emits a label 1..10, and samples follow the exact label distribution."""

import random

import pytest
import torch

from ehrjudge.judge.generate import LabelGenerationError, LabelLogitsProcessor, generate_label, parse_label
from ehrjudge.judge.labels import LabelScorer
from ehrjudge.judge.prompt import build_prompt
from ehrjudge.judge.tiny import tiny_judge


@pytest.fixture(scope="module")
def judge():
    return tiny_judge(seed=1)


def random_prompts(tokenizer, n, seed):
    rng = random.Random(seed)
    words = ["age", "sex", "F", "M", "glucose", "10", "7.5", "admissions", "died", "alive", ";", ":", "x3"]
    return [build_prompt(" ".join(rng.choice(words) for _ in range(rng.randint(1, 40))), tokenizer)
            for _ in range(n)]


def test_sampled_generation_only_emits_labels(judge):
    # Setup
    model, tokenizer = judge
    prompts = random_prompts(tokenizer, 64, seed=0)
    # Run
    labels = generate_label(model, tokenizer, prompts, sample=True, batch_size=16, generator_seed=0)
    greedy = generate_label(model, tokenizer, prompts, sample=False, batch_size=16)
    # Assert
    assert len(labels) == len(greedy) == 64
    assert set(labels) <= set(range(1, 11)) and set(greedy) <= set(range(1, 11))
    assert len(set(labels)) >= 3  # sampling really varies


def test_unconstrained_model_would_emit_other_tokens(judge):
    # Setup: the same random model without the processor
    model, tokenizer = judge
    scorer = LabelScorer(tokenizer)
    batch = scorer.encode(random_prompts(tokenizer, 8, seed=1), "cpu")
    # Run
    with torch.no_grad():
        out = model.generate(**batch, max_new_tokens=3, do_sample=False, pad_token_id=tokenizer.pad_token_id)
    rows = out[:, batch["input_ids"].shape[1]:].tolist()
    # Assert: without the constraint, outputs are not labels (so the constrained test above is meaningful)
    with pytest.raises(LabelGenerationError):
        for row in rows:
            parse_label(row, scorer)


def locally_normalized_label_probs(model, tokenizer, scorer, prompt):
    """What constrained sampling draws from: each step's softmax renormalized over the allowed tokens.

    This differs from the exact answer distribution (LabelScorer), which normalizes over whole sequences.
    """
    processor = LabelLogitsProcessor(scorer.sequence_token_ids, prompt_length=0)
    prompt_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    probs = []
    for sequence in scorer.sequence_token_ids:
        logits = model(input_ids=torch.tensor([prompt_ids + sequence])).logits[0].double()
        prob = 1.0
        for j, token in enumerate(sequence):
            allowed = processor.allowed_next_tokens(tuple(sequence[:j]))
            step = torch.softmax(logits[len(prompt_ids) - 1 + j, allowed], dim=-1)
            prob *= step[allowed.index(token)].item()
        probs.append(prob)
    return torch.tensor(probs, dtype=torch.float64)


def test_samples_follow_the_constrained_step_distribution(judge):
    # Setup: one prompt sampled 600 times
    model, tokenizer = judge
    scorer = LabelScorer(tokenizer)
    prompt = random_prompts(tokenizer, 1, seed=2)[0]
    with torch.no_grad():
        expected = locally_normalized_label_probs(model, tokenizer, scorer, prompt)  # (10,)
    # Run
    labels = generate_label(model, tokenizer, [prompt] * 600, sample=True, batch_size=600, generator_seed=3)
    # Assert: a proper distribution, and empirical frequencies within 4.5 standard errors of it
    assert abs(expected.sum().item() - 1) < 1e-9
    frequencies = torch.bincount(torch.tensor(labels) - 1, minlength=10).double() / 600
    stderr = (expected * (1 - expected) / 600).sqrt()
    assert ((frequencies - expected).abs() <= 4.5 * stderr + 2e-3).all(), (frequencies, expected)


def test_processor_masks_everything_but_label_prefixes(judge):
    # Setup
    _, tokenizer = judge
    scorer = LabelScorer(tokenizer)
    one, zero = tokenizer.convert_tokens_to_ids("1"), tokenizer.convert_tokens_to_ids("0")
    processor = LabelLogitsProcessor(scorer.sequence_token_ids, prompt_length=2)
    scores = torch.zeros(3, len(tokenizer))
    input_ids = torch.tensor([[5, 6, 0], [5, 6, one], [5, 6, zero]])[:, :3]
    # Run
    first = processor(input_ids[:, :2], scores[:1].expand(3, -1).clone())
    after_one = processor(input_ids[1:2], scores[:1].clone())
    # Assert
    allowed_first = set(torch.isfinite(first[0]).nonzero().flatten().tolist())
    assert allowed_first == {tokenizer.convert_tokens_to_ids(str(d)) for d in range(1, 10)}
    assert set(torch.isfinite(after_one[0]).nonzero().flatten().tolist()) == {zero, scorer.end_id}
    with pytest.raises(LabelGenerationError):
        processor(input_ids[2:3], scores[:1].clone())  # "0" is not a prefix of any label


def test_parse_label_never_falls_back(judge):
    # Setup
    _, tokenizer = judge
    scorer = LabelScorer(tokenizer)
    one, zero = tokenizer.convert_tokens_to_ids("1"), tokenizer.convert_tokens_to_ids("0")
    # Run / Assert
    assert parse_label([one, zero, scorer.end_id], scorer) == 10
    assert parse_label([one, scorer.end_id, scorer.end_id], scorer) == 1
    for bad in ([one, zero], [zero, scorer.end_id], [one, one, scorer.end_id], []):
        with pytest.raises(LabelGenerationError):
            parse_label(bad, scorer)
