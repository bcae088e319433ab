"""The cached-lower-layers policy gives the same label log-probs as LabelScorer on the whole model."""

import torch

from ehrjudge.judge.labels import LabelScorer
from ehrjudge.judge.prompt import build_prompt
from ehrjudge.judge.tiny import tiny_judge
from ehrjudge.train.policy import LabelPolicy
from ehrjudge.train.tiny import TINY_PROMPT


def test_cached_upper_layers_match_label_scorer_after_updates():
    # Setup: prompts of different lengths (left padding), a 3-layer model, top 2 layers trainable
    model, tokenizer = tiny_judge(seed=1, layers=3, hidden=32)
    prompts = [build_prompt("Demographics: male, age 4" + "1" * k, tokenizer, TINY_PROMPT) for k in range(5)]
    policy = LabelPolicy(model, tokenizer, prompts, train_layers=2, cache_lower_layers=True)
    with torch.no_grad():
        before = policy.log_probs([0, 1, 2, 3, 4])  # fills the cache
        reference = policy.reference([4, 1])
        # Run: change the trainable layers after caching, as training does
        generator = torch.Generator().manual_seed(0)
        for layer in model.model.layers[1:]:
            for parameter in layer.parameters():
                parameter.add_(0.3 * torch.randn(parameter.shape, generator=generator))
        cached = policy.log_probs([3, 0, 4, 1, 2])
        direct = LabelScorer(tokenizer).log_probs(model, [prompts[i] for i in (3, 0, 4, 1, 2)])
    # Assert: the cache holds frozen inputs only, so the results follow the updated weights exactly
    assert torch.allclose(cached, direct, atol=1e-4)
    assert (cached - before[[3, 0, 4, 1, 2]]).abs().max() > 0.05
    assert torch.allclose(reference, before[[4, 1]], atol=1e-4)  # reference = the weights at caching time
    assert torch.allclose(cached.exp().sum(-1), torch.ones(5), atol=1e-5)


def test_plain_policy_equals_label_scorer():
    # Setup
    model, tokenizer = tiny_judge(seed=2, layers=2, hidden=32)
    prompts = [build_prompt(f"Demographics: female, age {a}", tokenizer, TINY_PROMPT) for a in (30, 71)]
    policy = LabelPolicy(model, tokenizer, prompts, train_layers=0, cache_lower_layers=True)
    # Run
    with torch.no_grad():
        values = policy.log_probs([1, 0])
        expected = LabelScorer(tokenizer).log_probs(model, [prompts[1], prompts[0]])
    # Assert
    assert policy.split is None and torch.equal(values, expected)
