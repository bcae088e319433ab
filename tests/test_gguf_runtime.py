"""The judge exported to GGUF and run by llama.cpp (judge/gguf_runtime.py) gives the torch judge's label distribution.

llama-cpp-python is an optional extra (ehrjudge[gguf], it compiles llama.cpp): without it, or without the converter
(gguf_runtime.fetch_converter), only the error tests run.
"""

import numpy as np
import pytest


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    from ehrjudge.errors import InputError
    from ehrjudge.judge.gguf_runtime import converter_path, export_gguf
    from ehrjudge.judge.tiny import tiny_judge

    pytest.importorskip("llama_cpp")
    try:
        converter_path()
    except InputError as error:  # the message says how to fetch it
        pytest.skip(str(error))
    model, tokenizer = tiny_judge()
    folder = tmp_path_factory.mktemp("gguf")
    return (model, tokenizer, export_gguf(model, tokenizer, folder / "judge-f32.gguf", "f32"),
            export_gguf(model, tokenizer, folder / "judge-q8_0.gguf", "q8_0"))


def prompts(tokenizer, n=11):
    return [tokenizer.apply_chat_template([{"role": "user", "content": "age: 54\nicd I10: " + "1 " * (3 + 2 * i)}],
                                          tokenize=False, add_generation_prompt=True) for i in range(n)]


@pytest.mark.parametrize("share_prefix", [True, False])
def test_f32_gguf_judge_equals_the_torch_judge(exported, share_prefix):
    from ehrjudge.judge.gguf_runtime import GgufJudge
    from ehrjudge.judge.scoring import judge_prompts

    # Setup: prompts of different lengths sharing a chat-template prefix
    model, tokenizer, f32, _ = exported
    texts = prompts(tokenizer)
    judge = GgufJudge(f32, tokenizer, threads=1, share_prefix=share_prefix)
    # Run: twice, so the second call reuses (or re-decodes) the cached prefix
    torch_log_probs = judge_prompts(model, tokenizer, texts, batch_size=4)
    first, seconds = judge.judge_prompts(texts)
    again, _ = judge.judge_prompts(texts[::-1])
    # Assert: same distribution (float rounding only), rows normalized, input order kept
    assert first.shape == (len(texts), 10) and seconds > 0
    np.testing.assert_allclose(np.exp(first).sum(axis=1), 1.0, atol=1e-6)
    np.testing.assert_allclose(first, torch_log_probs, atol=1e-3)
    np.testing.assert_allclose(again, torch_log_probs[::-1], atol=1e-3)
    assert np.abs(np.exp(torch_log_probs) - 0.1).max() > 0.01  # the tiny judge is far from uniform: a real check


def test_q8_0_gguf_has_q8_0_weights_and_scores(exported):
    gguf = pytest.importorskip("gguf")
    from ehrjudge.judge.gguf_runtime import GgufJudge

    from ehrjudge.judge.scoring import judge_prompts

    # Setup
    model, tokenizer, _, q8_0 = exported
    texts = prompts(tokenizer, 5)
    # Run
    log_probs, _ = GgufJudge(q8_0, tokenizer, threads=1).judge_prompts(texts)
    torch_log_probs = judge_prompts(model, tokenizer, texts, batch_size=4)
    types = {tensor.name: tensor.tensor_type for tensor in gguf.GGUFReader(q8_0).tensors}
    # Assert: the matmul weights are Q8_0, and the output is a distribution near the torch judge's (measured: max
    # |delta p| 0.021 on this tiny judge, whose 0.2-std random weights are coarser to quantize than trained ones)
    assert types["blk.0.ffn_up.weight"] == gguf.GGMLQuantizationType.Q8_0
    np.testing.assert_allclose(np.exp(log_probs).sum(axis=1), 1.0, atol=1e-6)
    np.testing.assert_allclose(np.exp(log_probs), np.exp(torch_log_probs), atol=0.05)


def test_missing_file_and_converter_are_named(tmp_path):
    from ehrjudge.errors import InputError
    from ehrjudge.judge.gguf_runtime import GgufJudge, export_gguf
    from ehrjudge.judge.tiny import smollm2_tokenizer, tiny_judge

    model, tokenizer = tiny_judge()
    with pytest.raises(InputError, match="judge.gguf"):
        GgufJudge(tmp_path / "judge.gguf", smollm2_tokenizer())
    with pytest.raises(InputError, match="converter is missing.*nowhere/convert_hf_to_gguf.py"):
        export_gguf(model, tokenizer, tmp_path / "judge.gguf", converter=tmp_path / "nowhere" / "convert_hf_to_gguf.py")
