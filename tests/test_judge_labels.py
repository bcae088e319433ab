"""Exact label distribution: brute force agreement, padding invariance, gradients, trie layout."""

import pytest
import torch

from ehrjudge.judge.labels import LabelScorer, LabelTrie
from ehrjudge.judge.prompt import AUDITOR_INSTRUCTION, PromptConfig, build_prompt, resolved_chat_template
from ehrjudge.judge.tiny import tiny_judge

RECORDS = ["age: 71; sex: F; admissions: 2; lab_glucose: 140",
           "age: 34; sex: M",
           "age: 55; sex: F; admissions: 9; dx_I10: 1; dx_E11: 1; lab_creatinine: 2.3; drug_metformin: 4; los: 17"]


@pytest.fixture(scope="module")
def judge():
    return tiny_judge(seed=0)


def brute_force_log_probs(model, tokenizer, scorer, prompt):
    """log p(label tokens + end | prompt) for each label, one plain full forward per label, no cache."""
    prompt_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    values = []
    for sequence in scorer.sequence_token_ids:
        ids = torch.tensor([prompt_ids + sequence])
        logp = torch.log_softmax(model(input_ids=ids).logits[0].float(), dim=-1)
        values.append(sum(logp[len(prompt_ids) - 1 + j, token].item() for j, token in enumerate(sequence)))
    return torch.tensor(values, dtype=torch.float64)


def test_label_sequences_for_smollm2_tokenizer(judge):
    # Setup
    _, tokenizer = judge
    # Run
    scorer = LabelScorer(tokenizer)
    # Assert: digits are single tokens, "10" is "1" then "0", every answer ends with <|im_end|>
    end = tokenizer.convert_tokens_to_ids("<|im_end|>")
    one, zero = tokenizer.convert_tokens_to_ids("1"), tokenizer.convert_tokens_to_ids("0")
    assert scorer.end_id == end
    assert scorer.sequence_token_ids[0] == [one, end]
    assert scorer.sequence_token_ids[9] == [one, zero, end]
    assert len(scorer.trie.node_tokens) == 10  # "1".."9" and "1 0"
    assert scorer.trie.node_parents[-1] == 0 and scorer.trie.node_depths[-1] == 2


def test_distribution_matches_brute_force_and_sums_to_one(judge):
    # Setup
    model, tokenizer = judge
    scorer = LabelScorer(tokenizer)
    prompts = [build_prompt(text, tokenizer) for text in RECORDS]
    # Run
    with torch.no_grad():
        sequence_logp = scorer.sequence_log_probs(model, prompts).double()
        one_pass_logp = scorer.sequence_log_probs(model, prompts, one_pass=True).double()
        label_logp = scorer.log_probs(model, prompts).double()
        expected = torch.stack([brute_force_log_probs(model, tokenizer, scorer, p) for p in prompts])
    # Assert
    torch.testing.assert_close(sequence_logp, expected, atol=1e-4, rtol=0)
    torch.testing.assert_close(one_pass_logp, expected, atol=1e-4, rtol=0)
    torch.testing.assert_close(label_logp, torch.log_softmax(expected, dim=-1), atol=1e-4, rtol=0)
    torch.testing.assert_close(label_logp.exp().sum(dim=1), torch.ones(3, dtype=torch.float64))
    assert label_logp.exp().max() > 0.15  # not a degenerate uniform distribution


def test_batched_with_padding_equals_unbatched(judge):
    # Setup
    model, tokenizer = judge
    scorer = LabelScorer(tokenizer)
    prompts = [build_prompt(text, tokenizer) for text in RECORDS]
    lengths = {len(tokenizer(p, add_special_tokens=False)["input_ids"]) for p in prompts}
    # Run
    with torch.no_grad():
        batched = scorer.log_probs(model, prompts)
        single = torch.cat([scorer.log_probs(model, [p]) for p in prompts])
        chunked = scorer.log_probs(model, prompts, batch_size=2)
    # Assert
    assert len(lengths) == 3  # the batch really is padded
    torch.testing.assert_close(batched, single, atol=1e-5, rtol=0)
    torch.testing.assert_close(chunked, single, atol=1e-5, rtol=0)


@pytest.mark.parametrize("checkpointing", [False, True])
def test_gradients_flow_through_log_probs(checkpointing):
    # Setup: a fresh tiny model in training mode, optionally with gradient checkpointing (which disables the cache)
    model, tokenizer = tiny_judge(seed=0)
    scorer = LabelScorer(tokenizer)
    prompts = [build_prompt(text, tokenizer) for text in RECORDS[:2]]
    with torch.no_grad():
        inference = scorer.log_probs(model, prompts)
    if checkpointing:
        model.gradient_checkpointing_enable()
    model.train()
    # Run: maximize the log-probability of label 7
    training = scorer.log_probs(model, prompts)
    (-training[:, 6].sum()).backward()
    # Assert: same values as inference; every layer, the embeddings and the continuation path got a gradient
    torch.testing.assert_close(training.detach(), inference, atol=1e-5, rtol=0)
    grads = {name: p.grad for name, p in model.named_parameters()}
    assert all(g is not None and torch.isfinite(g).all() for g in grads.values())
    assert grads["model.embed_tokens.weight"].abs().sum() > 0
    assert all(grads[f"model.layers.{i}.self_attn.q_proj.weight"].abs().sum() > 0 for i in range(2))


def test_trie_for_single_token_labels():
    # Setup: a tokenizer where "10" is one token (ids 100..109 for labels 1..10, end = 7)
    sequences = [[100 + k, 7] for k in range(10)]
    # Run
    trie = LabelTrie.build(sequences)
    # Assert: one node per label, each predicted from the prompt then its own node
    assert trie.node_tokens == tuple(range(100, 110))
    assert trie.node_parents == (-1,) * 10 and trie.node_depths == (1,) * 10
    assert trie.steps[9] == ((-1, 109), (9, 7))
    assert torch.equal(trie.ancestor_mask(), torch.eye(10, dtype=torch.bool))


def test_prompt_holds_instruction_record_and_suffix(judge):
    # Setup
    _, tokenizer = judge
    config = PromptConfig(system_prompt="Be terse.")
    # Run
    prompt = build_prompt("age: 40", tokenizer, config)
    default = build_prompt("age: 40", tokenizer)
    # Assert
    assert prompt.startswith("<|im_start|>system\nBe terse.<|im_end|>")
    assert f"{AUDITOR_INSTRUCTION}\n\nage: 40\n\nRating (1-10):<|im_end|>" in prompt
    assert prompt.endswith("<|im_start|>assistant\n")
    assert "SmolLM" in default  # the template's own default system prompt is kept when none is given
    assert resolved_chat_template(tokenizer, config) == tokenizer.chat_template


def test_cached_shared_prefix_gives_the_same_distribution(judge):
    # Setup
    model, tokenizer = judge
    scorer = LabelScorer(tokenizer)
    prompts = [build_prompt(text, tokenizer) for text in RECORDS]
    # Run
    with torch.no_grad():
        prefix = scorer.shared_prefix(model, prompts)
        plain = scorer.log_probs(model, prompts)
        cached = scorer.log_probs(model, prompts, prefix=prefix)
        cached_single = torch.cat([scorer.log_probs(model, [p], prefix=prefix) for p in prompts])
    # Assert: the prefix covers the system prompt and the instruction, and changes nothing
    assert "Return ONLY a single integer from 1 to 10.\n\nage: " in tokenizer.decode(prefix.token_ids)
    torch.testing.assert_close(cached, plain, atol=1e-5, rtol=0)
    torch.testing.assert_close(cached_single, plain, atol=1e-5, rtol=0)
    with pytest.raises(ValueError):
        scorer.log_probs(model, prompts, prefix=prefix)  # grad enabled: a cached prefix would drop gradients
    with pytest.raises(ValueError), torch.no_grad():
        scorer.log_probs(model, ["<|im_start|>user\nother"], prefix=prefix)
