"""The judge exported to ONNX (judge/onnx_runtime.py) gives the torch judge's label distribution."""

import numpy as np
import pytest

pytest.importorskip("onnxruntime")


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    from ehrjudge.judge.onnx_runtime import export_onnx, quantize_int8
    from ehrjudge.judge.tiny import tiny_judge

    model, tokenizer = tiny_judge()
    folder = tmp_path_factory.mktemp("onnx")
    fp32 = export_onnx(model, tokenizer, folder / "judge.onnx")
    return model, tokenizer, fp32, quantize_int8(fp32, folder / "judge_int8.onnx")


def prompts(tokenizer, n=11):
    return [tokenizer.apply_chat_template([{"role": "user", "content": "age: 54\nicd I10: " + "1 " * (3 + 2 * i)}],
                                          tokenize=False, add_generation_prompt=True) for i in range(n)]


def test_onnx_judge_equals_the_torch_judge(exported):
    from ehrjudge.judge.onnx_runtime import OnnxJudge
    from ehrjudge.judge.scoring import judge_prompts

    # Setup: prompts of different lengths, so batches carry left padding
    model, tokenizer, fp32, _ = exported
    texts = prompts(tokenizer)
    # Run
    torch_log_probs = judge_prompts(model, tokenizer, texts, batch_size=4)
    onnx_log_probs, seconds = OnnxJudge(fp32, tokenizer, threads=1).judge_prompts(texts, batch_size=4)
    # Assert: same distribution (float rounding only), rows normalized, input order kept
    assert onnx_log_probs.shape == (len(texts), 10) and seconds > 0
    np.testing.assert_allclose(np.exp(onnx_log_probs).sum(axis=1), 1.0, atol=1e-6)
    np.testing.assert_allclose(onnx_log_probs, torch_log_probs, atol=1e-4)
    assert np.abs(np.exp(torch_log_probs) - 0.1).max() > 0.01  # the tiny judge is far from uniform: a real check


def test_int8_graph_has_int8_weights_and_scores(exported):
    import onnx

    from ehrjudge.judge.onnx_runtime import OnnxJudge

    # Setup
    _, tokenizer, fp32, int8 = exported
    # Run
    log_probs, _ = OnnxJudge(int8, tokenizer, threads=1).judge_prompts(prompts(tokenizer, 5), batch_size=2)
    graph = onnx.load(str(int8)).graph
    # Assert: integer matmuls replaced the float ones with constant weights, and the output is a distribution
    assert any(node.op_type in ("MatMulInteger", "DynamicQuantizeMatMul") for node in graph.node)
    assert any(init.data_type == onnx.TensorProto.INT8 for init in graph.initializer)
    np.testing.assert_allclose(np.exp(log_probs).sum(axis=1), 1.0, atol=1e-6)


def test_prompt_past_the_context_is_refused_naming_its_row(exported):
    from ehrjudge.errors import InputError
    from ehrjudge.judge.onnx_runtime import OnnxJudge

    # Setup: the tiny judge's context (4,096 positions) is saved in both graphs; the second prompt runs past it
    model, tokenizer, fp32, int8 = exported
    texts = prompts(tokenizer, 1) + prompts(tokenizer, 1)[0:1]
    texts[1] = texts[1].replace("age: 54", "age: 54 " + "x " * 4200)
    for path in (fp32, int8):
        judge = OnnxJudge(path, tokenizer, threads=1)
        # Run / Assert: the torch judge's refusal (scoring.check_context), the row named
        assert judge.context == model.config.max_position_embeddings
        with pytest.raises(InputError, match="over the model's context of 4096") as refused:
            judge.judge_prompts(texts)
        assert refused.value.row == 1


def test_missing_graph_is_named(tmp_path):
    from ehrjudge.errors import InputError
    from ehrjudge.judge.onnx_runtime import OnnxJudge
    from ehrjudge.judge.tiny import smollm2_tokenizer

    with pytest.raises(InputError, match="judge.onnx"):
        OnnxJudge(tmp_path / "judge.onnx", smollm2_tokenizer())
