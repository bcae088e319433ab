"""The judge's forward module: every way it runs gives the label probabilities of a plain forward of prompt + answer."""

import pytest
import torch

from ehrjudge.judge import forward
from ehrjudge.judge.labels import LabelScorer
from ehrjudge.judge.prompt import build_prompt
from ehrjudge.judge.tiny import tiny_judge
from ehrjudge.train.tiny import TINY_PROMPT

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def judge():
    model, tokenizer = tiny_judge(seed=11, layers=3, hidden=32)
    # different lengths behind the template's shared prefix, so batches are left-padded
    prompts = [build_prompt(f"Demographics: male, age {30 + 11 * k}" + " lab" * (2 * k % 5), tokenizer, TINY_PROMPT)
               for k in range(4)]
    return model, tokenizer, prompts


def plain_sequence_log_probs(model, tokenizer, prompts):
    """(B, 10) the known answer: per prompt and label, one forward of prompt + label tokens + end, no padding, no
    cache, no custom mask, and the label's token log-probs summed: log p(s_k | x)."""
    sequences = LabelScorer(tokenizer).sequence_token_ids
    rows = []
    for prompt in prompts:
        prompt_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
        totals = []
        for sequence in sequences:
            with torch.no_grad():
                logits = model(input_ids=torch.tensor([prompt_ids + sequence])).logits[0]
            logp = torch.log_softmax(logits.double(), dim=-1)
            totals.append(sum(logp[len(prompt_ids) - 1 + j, token] for j, token in enumerate(sequence)))
        rows.append(torch.stack(totals))
    return torch.stack(rows)


def assert_plain(sums, expected):
    """Sequence log-likelihoods and the label probabilities they give both agree with the plain forward's."""
    torch.testing.assert_close(sums.double(), expected, atol=1e-4, rtol=0)
    torch.testing.assert_close(torch.softmax(sums.double(), dim=-1), torch.softmax(expected, dim=-1),
                               atol=1e-5, rtol=0)


def test_tree_attention_by_hand():
    # Setup: labels "1" -> [5, E], "10" -> [5, 6, E]: nodes "5" (depth 1) and "5 6" (depth 2, child of node 0)
    trie = forward.LabelTrie.build([[5, 9], [5, 6, 9]])
    real = torch.tensor([[False, True, True]])  # one row: one padding token, then two prompt tokens
    # Run
    nodes_only = forward.tree_attention(real, trie, prompt_rows=False)
    full = forward.tree_attention(real, trie, prompt_rows=True, n_prefix=1)
    positions = forward.token_positions(real, offset=1)
    # Assert: keys are [prefix][pad, t1, t2][node 0, node 1]
    assert trie.node_tokens == (5, 6) and trie.node_parents == (-1, 0) and trie.steps[1] == ((-1, 5), (0, 6), (1, 9))
    assert nodes_only.tolist() == [[[False, True, True, True, False],
                                    [False, True, True, True, True]]]
    assert full.tolist() == [[[True, True, False, False, False, False],  # the pad row sees the prefix and itself
                              [True, False, True, False, False, False],
                              [True, False, True, True, False, False],
                              [True, False, True, True, True, False],
                              [True, False, True, True, True, True]]]
    assert positions.tolist() == [[1, 1, 2]]
    assert forward.node_positions(positions[:, -1:], trie).tolist() == [[3, 4]]


def test_label_sums_by_hand():
    # Setup: the same trie; log-probs chosen so that each label's path is easy to add up
    trie = forward.LabelTrie.build([[0, 2], [0, 1, 2]])
    prompt_logp = torch.log(torch.tensor([[0.5, 0.25, 0.25]]))
    node_logp = torch.log(torch.tensor([[[0.1, 0.6, 0.3], [0.2, 0.2, 0.6]]]))  # at node "0", at node "0 1"
    # Run
    sums = forward.label_sums(prompt_logp, node_logp, trie)
    # Assert: p("0", E) = 0.5 * 0.3, p("0", "1", E) = 0.5 * 0.6 * 0.6
    torch.testing.assert_close(sums.exp(), torch.tensor([[0.15, 0.18]]))


@pytest.mark.parametrize("way", ["two_step", "two_step_prefix", "one_pass"])
def test_whole_model_equals_plain_forward(judge, way):
    # Setup
    model, tokenizer, prompts = judge
    scorer = LabelScorer(tokenizer)
    ids = scorer.tokenize(prompts)
    expected = plain_sequence_log_probs(model, tokenizer, prompts)
    # Run
    with torch.no_grad():
        prefix = scorer.shared_prefix(model, prompts) if way == "two_step_prefix" else None
        sums = forward.sequence_log_probs(model, ids, scorer.trie, scorer.pad_id, prefix, one_pass=way == "one_pass")
    # Assert
    assert len({len(x) for x in ids}) > 1  # the batch really is padded
    assert_plain(sums, expected)


@pytest.mark.parametrize("use_prefix", [True, False])
def test_upper_layers_on_captured_inputs_equal_plain_forward(judge, use_prefix):
    # Setup: layer 1's inputs (of 3 layers) captured by a two-step pass
    model, tokenizer, prompts = judge
    scorer = LabelScorer(tokenizer)
    prefix = scorer.shared_prefix(model, prompts, layer=1) if use_prefix else None
    expected = plain_sequence_log_probs(model, tokenizer, prompts)
    # Run
    captured, rows = scorer.log_probs_and_inputs(model, prompts, 1, prefix)
    with torch.no_grad():
        sums = forward.upper_sequence_log_probs(model, 1, rows[::-1], scorer.trie,
                                                None if prefix is None else prefix.layer_input)
    # Assert: the rows hold only the tokens after the prefix; both passes give the plain answer
    skip = 0 if prefix is None else len(prefix.token_ids)
    assert [own.shape[0] for own, _ in rows] == [len(x) - skip for x in scorer.tokenize(prompts)]
    torch.testing.assert_close(captured.exp().double(), torch.softmax(expected, dim=-1), atol=1e-5, rtol=0)
    assert_plain(sums, expected.flip(0))


def test_a_model_that_transforms_its_logits_is_refused_not_scored_wrongly(judge):
    """Logits are lm_head(hidden) in every path of the forward module; a model whose config scales or soft-caps them
    (Gemma 2, Cohere, Granite) gets a named error instead of silently different probabilities."""
    from ehrjudge.errors import InputError

    model, tokenizer, prompts = judge
    scorer = LabelScorer(tokenizer)
    model.config.final_logit_softcapping = 30.0
    try:
        with pytest.raises(InputError, match="final_logit_softcapping"):
            scorer.log_probs(model, prompts[:2])
    finally:
        model.config.final_logit_softcapping = None
    assert torch.isfinite(scorer.log_probs(model, prompts[:2])).all()
