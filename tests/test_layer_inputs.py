"""Saved layer-K inputs of a base-model pass give a top-layers-changed judge the numbers of a whole-model pass."""

import copy
import logging

import numpy as np
import pytest
import torch

from ehrjudge.errors import InputError
from ehrjudge.judge.labels import common_prefix_length
from ehrjudge.judge.layer_inputs import LayerCapture, LayerInputs
from ehrjudge.judge.prompt import build_prompt
from ehrjudge.judge.scoring import judge_prompts
from ehrjudge.judge.tiny import tiny_judge
from ehrjudge.train.policy import judge_from_layer_inputs
from ehrjudge.train.tiny import TINY_PROMPT


def prompts_for(tokenizer, n=6):
    # different lengths (left padding, several batches) behind the template's shared prefix
    return [build_prompt(f"Demographics: female, age {20 + 9 * k}" + " lab" * k, tokenizer, TINY_PROMPT)
            for k in range(n)]


def changed_top_layers(model, first: int, seed: int = 0):
    """A copy whose layers >= first are moved by noise, as training moves them; the layers below are shared."""
    changed = copy.deepcopy(model)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for layer in changed.model.layers[first:]:
            for parameter in layer.parameters():
                parameter.add_(0.3 * torch.randn(parameter.shape, generator=generator))
    return changed


@pytest.mark.parametrize("reuse_prefix", [True, False])
def test_upper_layers_on_saved_inputs_equal_the_whole_model(reuse_prefix):
    # Setup: the base model judges the prompts and keeps layer 1's inputs (of 3 layers)
    model, tokenizer = tiny_judge(seed=4, layers=3, hidden=32)
    prompts = prompts_for(tokenizer)
    capture = LayerCapture(-2)
    base = judge_prompts(model, tokenizer, prompts, batch_size=4, reuse_prefix=reuse_prefix, capture=capture)
    trained = changed_top_layers(model, first=1)
    subset = [prompts[i] for i in (5, 0, 3)]
    # Run: the changed judge on a reordered subset, from the saved inputs and from scratch
    reused = judge_from_layer_inputs(trained, tokenizer, subset, capture.result, batch_size=2)
    direct = judge_prompts(trained, tokenizer, subset, batch_size=2, reuse_prefix=reuse_prefix)
    # Assert
    assert capture.result.layer == 1 and (capture.result.prefix is not None) == reuse_prefix
    np.testing.assert_allclose(reused, direct, atol=1e-5)
    np.testing.assert_allclose(np.exp(reused).sum(axis=1), 1.0, atol=1e-6)
    assert np.abs(reused - base[[5, 0, 3]]).max() > 0.05  # the upper layers really ran with the new weights


def test_single_prompt_pass_keeps_the_whole_prompt():
    # Setup: one prompt, so no shared prefix is split off
    model, tokenizer = tiny_judge(seed=5, layers=2, hidden=32)
    prompt = prompts_for(tokenizer, 1)
    capture = LayerCapture(1)
    judge_prompts(model, tokenizer, prompt, capture=capture)
    trained = changed_top_layers(model, first=1, seed=1)
    # Run
    reused = judge_from_layer_inputs(trained, tokenizer, prompt, capture.result)
    # Assert
    assert capture.result.prefix is None and capture.result.own[0].shape[0] == len(tokenizer.encode(prompt[0]))
    np.testing.assert_allclose(reused, judge_prompts(trained, tokenizer, prompt), atol=1e-5)


def test_inputs_that_do_not_fit_are_refused_with_the_reason(caplog):
    # Setup
    model, tokenizer = tiny_judge(seed=6, layers=3, hidden=32)
    prompts = prompts_for(tokenizer, 3)
    capture = LayerCapture(-1)
    judge_prompts(model, tokenizer, prompts, capture=capture)
    lower_changed = changed_top_layers(model, first=1)  # moves layer 1, which is below the kept layer 2
    unseen = prompts + [build_prompt("Demographics: male, age 99", tokenizer, TINY_PROMPT)]
    # Run
    with caplog.at_level(logging.WARNING):
        other_weights = judge_from_layer_inputs(lower_changed, tokenizer, prompts, capture.result)
        other_prompts = judge_from_layer_inputs(model, tokenizer, unseen, capture.result)
    # Assert
    assert other_weights is None and other_prompts is None
    assert "layers below 2 differ" in caplog.text and "1 of 4 prompts were not judged" in caplog.text


def test_save_load_round_trip_and_bad_file(tmp_path):
    # Setup
    model, tokenizer = tiny_judge(seed=7, layers=2, hidden=32)
    prompts = prompts_for(tokenizer, 3)
    capture = LayerCapture(-1)
    judge_prompts(model, tokenizer, prompts, capture=capture)
    (tmp_path / "bad.pt").write_text("not a tensor file")
    # Run
    capture.result.save(tmp_path / "inputs.pt")
    loaded = LayerInputs.load(tmp_path / "inputs.pt")
    # Assert
    assert loaded.layer == 1 and loaded.prompt_keys == capture.result.prompt_keys
    assert all(torch.equal(a, b) for a, b in zip(loaded.own, capture.result.own))
    assert torch.equal(loaded.prefix, capture.result.prefix)
    np.testing.assert_array_equal(judge_from_layer_inputs(model, tokenizer, prompts, loaded),
                                  judge_from_layer_inputs(model, tokenizer, prompts, capture.result))
    with pytest.raises(InputError, match="bad.pt"):
        LayerInputs.load(tmp_path / "bad.pt")


def lora_judge(model, layers, seed=0):
    """A PEFT LoRA judge on `layers`, its B matrices random so that the adapter changes the output."""
    from peft import LoraConfig, get_peft_model

    torch.manual_seed(seed)
    config = LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj",
                                                           "up_proj", "down_proj"],
                        layers_to_transform=layers, init_lora_weights=False)
    return get_peft_model(copy.deepcopy(model), config).eval()


def test_lora_judge_on_a_subset_with_a_longer_prefix_and_duplicates():
    # Setup: LoRA on the top 2 of 3 layers, as training makes it; the subset "age 41", "age 45", "age 41" shares
    # more tokens than all prompts do, and holds one prompt twice
    model, tokenizer = tiny_judge(seed=8, layers=3, hidden=32)
    prompts = [build_prompt(f"Demographics: female, age {age}", tokenizer, TINY_PROMPT) for age in (41, 45, 70, 23)]
    capture = LayerCapture(-2)
    judge_prompts(model, tokenizer, prompts, batch_size=3, capture=capture)
    trained = lora_judge(model, layers=[1, 2])
    subset = [prompts[0], prompts[1], prompts[0]]
    # Run
    reused = judge_from_layer_inputs(trained, tokenizer, subset, capture.result, batch_size=2)
    direct = judge_prompts(trained, tokenizer, subset, batch_size=3)
    # Assert
    longer = common_prefix_length(tokenizer(subset, add_special_tokens=False)["input_ids"])
    assert longer > capture.result.prefix.shape[0]  # the subset's own shared prefix is not the saved one
    np.testing.assert_allclose(reused, direct, atol=1e-5)
    np.testing.assert_allclose(reused[0], reused[2], atol=1e-5)  # the duplicate, in another batch
    assert np.abs(direct - judge_prompts(model, tokenizer, subset)).max() > 0.01  # the adapter does change it


def test_lora_on_a_lower_layer_is_refused_and_bad_layers_raise(tmp_path, caplog):
    # Setup
    model, tokenizer = tiny_judge(seed=9, layers=3, hidden=32)
    prompts = prompts_for(tokenizer, 3)
    capture = LayerCapture(-2)
    judge_prompts(model, tokenizer, prompts, capture=capture)
    data = {field: getattr(capture.result, field) for field in ("layer", "weights_sha", "trie_tokens",
                                                                "prompt_keys", "own", "trie", "prefix")}
    torch.save({**data, "own": data["own"][:2]}, tmp_path / "short.pt")
    # Run
    with caplog.at_level(logging.WARNING):
        refused = judge_from_layer_inputs(lora_judge(model, layers=[0, 1, 2]), tokenizer, prompts, capture.result)
    # Assert
    assert refused is None and "layers below 1 differ" in caplog.text
    with pytest.raises(ValueError, match="layer 3 does not exist"):
        judge_prompts(model, tokenizer, prompts, capture=LayerCapture(3))
    with pytest.raises(InputError, match="3 prompt keys, 2 prompt"):
        LayerInputs.load(tmp_path / "short.pt")
