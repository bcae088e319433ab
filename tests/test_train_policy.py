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


def test_shared_prefix_path_gives_the_plain_values_and_gradients():
    # Setup: prompts sharing the template's prefix; top 2 of 3 layers trainable, as training sets them
    model, tokenizer = tiny_judge(seed=3, layers=3, hidden=32)
    prompts = [build_prompt(f"Demographics: female, age {a}" + " x" * (a % 4), tokenizer, TINY_PROMPT)
               for a in (23, 41, 58, 77)]
    for parameter in model.parameters():
        parameter.requires_grad_(False)
    trainable = [p for layer in model.model.layers[1:] for p in layer.parameters()]
    for parameter in trainable:
        parameter.requires_grad_(True)
    with_prefix = LabelPolicy(model, tokenizer, prompts, train_layers=2, cache_lower_layers=True)
    without_prefix = LabelPolicy(model, tokenizer, prompts, train_layers=2, cache_lower_layers=True,
                                 use_prefix=False)
    weights = torch.arange(1.0, 11.0)  # any scalar of the log-probs: here E_pi[k]-like weighted sum

    def gradients(compute):
        for parameter in trainable:
            parameter.grad = None
        values = compute()
        (values.exp() * weights).sum().backward()
        return values.detach(), [parameter.grad.clone() for parameter in trainable]

    # Run
    prefixed, prefixed_grads = gradients(lambda: with_prefix.log_probs([2, 0, 3, 1]))
    per_row, per_row_grads = gradients(lambda: without_prefix.log_probs([2, 0, 3, 1]))
    direct, direct_grads = gradients(
        lambda: LabelScorer(tokenizer).log_probs(model, [prompts[i] for i in (2, 0, 3, 1)]))
    # Assert: the prefix is held once and the own-token cache excludes it; values and gradients agree
    assert with_prefix.prefix_hidden is not None and without_prefix.prefix_hidden is None
    n_prefix = with_prefix.prefix_hidden.shape[0]
    assert all(with_prefix.hidden_cache[i][0].shape[0] + n_prefix == without_prefix.hidden_cache[i][0].shape[0]
               for i in range(4))
    assert torch.allclose(prefixed, direct, atol=1e-5) and torch.allclose(per_row, direct, atol=1e-5)
    for a, b, c in zip(prefixed_grads, per_row_grads, direct_grads):
        assert torch.allclose(a, c, atol=1e-5, rtol=1e-4) and torch.allclose(b, c, atol=1e-5, rtol=1e-4)
    assert sum(g.abs().sum() for g in prefixed_grads) > 0


def test_prompts_without_a_shared_prefix_use_the_per_row_path():
    # Setup: raw strings that differ from their first token
    model, tokenizer = tiny_judge(seed=4, layers=2, hidden=32)
    prompts = ["alpha 3", "beta 7 7"]
    # Run
    policy = LabelPolicy(model, tokenizer, prompts, train_layers=1, cache_lower_layers=True)
    with torch.no_grad():
        values = policy.log_probs([0, 1])
        expected = LabelScorer(tokenizer).log_probs(model, prompts)
    # Assert
    assert policy.prefix is None and torch.allclose(values, expected, atol=1e-5)
