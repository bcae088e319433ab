"""judge/precision.py: bf16 matmuls in a LoRA judge's frozen layers, and how precision auto decides."""

import logging

import numpy as np
import pytest
import torch


def lora_judge(hidden=64, layers=3, seed=0):
    """A tiny Llama with a LoRA adapter on its top layer, B initialised non-zero so merging changes the weights."""
    from peft import LoraConfig, get_peft_model

    from ehrjudge.judge.tiny import tiny_judge

    model, tokenizer = tiny_judge(seed=seed, layers=layers, hidden=hidden)
    config = LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj",
                                                           "up_proj", "down_proj"],
                        layers_to_transform=[layers - 1], init_lora_weights=False)
    torch.manual_seed(seed + 1)
    return get_peft_model(model, config).eval(), tokenizer


def prompts(tokenizer, n=6):
    return [tokenizer.apply_chat_template([{"role": "user", "content": "age: 61\nicd E119: " + "2 " * (2 + i)}],
                                          tokenize=False, add_generation_prompt=True) for i in range(n)]


def test_bf16_frozen_casts_only_the_frozen_layers_and_keeps_the_answers(one_torch_thread):
    from ehrjudge.judge.forward import decoder_layers
    from ehrjudge.judge.precision import Bf16Linear, apply_precision
    from ehrjudge.judge.scoring import judge_prompts

    # Setup: the fp32 judge's label distribution, and its top layer's merged weight computed by hand
    model, tokenizer = lora_judge()
    texts = prompts(tokenizer)
    reference = judge_prompts(model, tokenizer, texts, batch_size=3)
    lora_q = decoder_layers(model)[2].self_attn.q_proj
    merged_q = (lora_q.base_layer.weight + lora_q.scaling["default"] * lora_q.lora_B["default"].weight
                @ lora_q.lora_A["default"].weight).detach().clone()
    # Run
    fast = apply_precision(model, "bf16-frozen", flags={"amx_bf16"})
    log_probs = judge_prompts(fast, tokenizer, texts, batch_size=3)
    # Assert: layers 0-1 run bf16 weights in every linear; layer 2 is fp32 with the adapter merged into it
    layers = decoder_layers(fast)
    for layer in layers[:2]:
        linears = [m for m in layer.modules() if isinstance(m, (Bf16Linear, torch.nn.Linear))]
        assert len(linears) == 7 and all(isinstance(m, Bf16Linear) and m.weight.dtype == torch.bfloat16
                                         for m in linears)
    top = layers[2].self_attn.q_proj
    assert type(top) is torch.nn.Linear and top.weight.dtype == torch.float32
    torch.testing.assert_close(top.weight, merged_q, atol=1e-6, rtol=1e-6)
    assert not any("lora_" in name for name, _ in fast.named_parameters())
    # the same distribution to bf16 rounding (8-bit mantissas), still normalized
    np.testing.assert_allclose(np.exp(log_probs).sum(axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(np.exp(log_probs), np.exp(reference), atol=0.02)
    assert np.abs(np.exp(reference) - 0.1).max() > 0.02  # far from uniform, so the comparison means something


def test_bf16_frozen_mlp_leaves_attention_fp32(one_torch_thread):
    from ehrjudge.judge.forward import decoder_layers
    from ehrjudge.judge.precision import Bf16Linear, apply_precision

    # Setup
    model, _ = lora_judge()
    # Run
    fast = apply_precision(model, "bf16-frozen-mlp")
    # Assert: in the frozen layers only gate/up/down are bf16; attention and the top layer keep nn.Linear in fp32
    for i, layer in enumerate(decoder_layers(fast)):
        mlp = [type(m) for m in (layer.mlp.gate_proj, layer.mlp.up_proj, layer.mlp.down_proj)]
        assert mlp == ([Bf16Linear] * 3 if i < 2 else [torch.nn.Linear] * 3)
        assert all(type(m) is torch.nn.Linear and m.weight.dtype == torch.float32
                   for m in (layer.self_attn.q_proj, layer.self_attn.k_proj, layer.self_attn.v_proj,
                             layer.self_attn.o_proj))


def test_bf16_linear_matches_a_rounded_fp32_matmul():
    from ehrjudge.judge.precision import Bf16Linear

    # Setup: a linear layer with a bias, inputs whose bf16 rounding is known
    torch.manual_seed(0)
    linear = torch.nn.Linear(16, 8)
    x = torch.randn(3, 16)
    # Run
    y = Bf16Linear(linear)(x)
    # Assert: fp32 out; equal to the fp32 product of the bf16-rounded operands, plus the fp32 bias
    expected = x.bfloat16().float() @ linear.weight.detach().bfloat16().float().T + linear.bias.detach()
    assert y.dtype == torch.float32
    torch.testing.assert_close(y, expected, atol=2e-2, rtol=1e-2)


@pytest.mark.parametrize("hidden, flags, expected, reason", [
    (64, set(), "float32", "this CPU has none of amx_bf16, avx512_bf16"),
    (64, {"avx2", "avx512f", "amx_bf16"}, "float32", "hidden size 64 < 256"),
    (256, {"avx2", "avx512_bf16"}, "bf16-frozen-mlp", "native bf16 CPU, LoRA judge"),
])
def test_auto_decides_from_the_cpu_the_adapter_and_the_size(hidden, flags, expected, reason, caplog):
    from ehrjudge.judge.precision import resolve_precision

    # Setup
    model, _ = lora_judge(hidden=hidden, layers=2)
    # Run
    with caplog.at_level(logging.INFO, logger="ehrjudge.judge.precision"):
        chosen = resolve_precision(model, "auto", flags=flags)
    # Assert: the choice, and its reason in the log
    assert chosen == expected
    assert f"auto -> {expected}" in caplog.text and reason in caplog.text


def test_auto_keeps_fp32_without_an_adapter_and_bf16_frozen_refuses_it():
    from ehrjudge.errors import InputError
    from ehrjudge.judge.precision import apply_precision, resolve_precision
    from ehrjudge.judge.tiny import tiny_judge

    # Setup: no adapter, so nothing marks which layers are frozen
    model, _ = tiny_judge(hidden=256)
    # Run / Assert
    assert resolve_precision(model, "auto", flags={"amx_bf16"}) == "float32"
    with pytest.raises(InputError, match="needs a judge with a LoRA adapter"):
        apply_precision(model, "bf16-frozen")
    with pytest.raises(InputError, match="unknown precision 'int4'.*auto, float32, bf16-frozen-mlp, bf16-frozen"):
        resolve_precision(model, "int4")


def test_cpu_flags_are_read_from_cpuinfo(tmp_path):
    from ehrjudge.judge.precision import cpu_flags, native_bf16

    # Setup: two processors' lines, as Linux writes them
    info = tmp_path / "cpuinfo"
    info.write_text("processor\t: 0\nflags\t\t: fpu avx2 avx512f amx_bf16 amx_tile\n\n"
                    "processor\t: 1\nflags\t\t: fpu avx2 avx512f amx_bf16 amx_tile\n")
    # Run
    flags = cpu_flags(info)
    # Assert
    assert {"avx2", "avx512f", "amx_bf16", "amx_tile"} <= flags and "processor" not in flags
    assert native_bf16(flags) and not native_bf16({"avx2", "avx512f"})
    assert cpu_flags(tmp_path / "missing") == set()


def test_a_saved_judge_scores_the_same_under_bf16_frozen(tiny_trained_judge, one_torch_thread):
    import pandas as pd

    from ehrjudge import Judge

    # Setup: the tiny trained judge (LoRA on its top layer of 2) and its test records
    folder = tiny_trained_judge / "run" / "best"
    records = pd.read_parquet(tiny_trained_judge / "dataset" / "test.parquet").head(8)
    # Run
    exact = Judge.load(folder, device="cpu", precision="float32").score(records)
    fast = Judge.load(folder, device="cpu", precision="bf16-frozen").score(records)
    # Assert: same records in the same order, expected scores equal to bf16 rounding
    assert list(fast["record_id"]) == list(exact["record_id"])
    np.testing.assert_allclose(fast["expected_score"], exact["expected_score"], atol=0.05)
