"""load_judge: local checkpoints, LoRA adapters, clear errors, and (slow) the cached conversion of the default model."""

import time

import huggingface_hub.constants
import pytest
import torch

from ehrjudge.errors import InputError
from ehrjudge.judge.labels import LabelScorer
from ehrjudge.judge.model import load_judge
from ehrjudge.judge.prompt import build_prompt
from ehrjudge.judge.tiny import save_tiny_judge

PROMPT_TEXT = "Demographics: female, age 71, alive\nAdmissions: 2"


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    return save_tiny_judge(tmp_path_factory.mktemp("tiny") / "model", seed=0)


def test_local_checkpoint_loads_for_batched_scoring(tiny_dir):
    # Run
    model, tokenizer = load_judge(str(tiny_dir), device="cpu")
    # Assert
    assert not model.training and next(model.parameters()).dtype == torch.float32
    assert tokenizer.padding_side == "left" and tokenizer.pad_token is not None
    with torch.no_grad():
        probs = LabelScorer(tokenizer).log_probs(model, [build_prompt(PROMPT_TEXT, tokenizer)]).exp()
    assert probs.shape == (1, 10) and abs(probs.sum().item() - 1) < 1e-5


def test_lora_adapter_dir_loads_base_plus_adapter(tiny_dir, tmp_path):
    # Setup: a LoRA adapter with non-zero B matrices, saved the way training saves it
    from peft import LoraConfig, get_peft_model

    base, tokenizer = load_judge(str(tiny_dir), device="cpu")
    peft_model = get_peft_model(base, LoraConfig(r=4, target_modules=["q_proj", "v_proj"], lora_alpha=8))
    torch.manual_seed(0)
    for name, parameter in peft_model.named_parameters():
        if "lora_B" in name:
            parameter.data.normal_(0, 0.5)
    peft_model.save_pretrained(tmp_path / "adapter")
    prompts = [build_prompt(PROMPT_TEXT, tokenizer)]
    scorer = LabelScorer(tokenizer)
    with torch.no_grad():
        expected = scorer.log_probs(peft_model.eval(), prompts)
    # Run
    as_model, _ = load_judge(str(tmp_path / "adapter"), device="cpu")
    as_adapter, _ = load_judge(str(tiny_dir), adapter=str(tmp_path / "adapter"), device="cpu")
    plain, _ = load_judge(str(tiny_dir), device="cpu")
    # Assert
    with torch.no_grad():
        torch.testing.assert_close(scorer.log_probs(as_model, prompts), expected, atol=1e-5, rtol=0)
        torch.testing.assert_close(scorer.log_probs(as_adapter, prompts), expected, atol=1e-5, rtol=0)
        assert (scorer.log_probs(plain, prompts) - expected).abs().max() > 1e-3  # the adapter matters


def test_bad_model_arguments_raise_clear_errors(tmp_path, monkeypatch):
    # Setup: no network here; offline mode makes the hub lookup fail at once instead of retrying
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    (tmp_path / "empty").mkdir()
    # Run / Assert
    with pytest.raises(InputError, match="no config.json"):
        load_judge(str(tmp_path / "empty"))
    with pytest.raises(InputError, match="not found"):
        load_judge(str(tmp_path / "missing"))
    with pytest.raises(InputError, match="hub cannot be reached"):
        load_judge("nobody-here/no-such-model-xyz")
    with pytest.raises(InputError, match="unknown dtype"):
        load_judge(str(tmp_path / "empty"), dtype="float8")


@pytest.mark.slow
def test_default_model_converts_once_into_the_cache(tmp_path, monkeypatch):
    # Setup: an empty cache holding a broken leftover of an interrupted conversion
    monkeypatch.setenv("EHRJUDGE_CACHE", str(tmp_path))
    broken = tmp_path / "models" / "smollm2-135m-instruct"
    broken.mkdir(parents=True)
    (broken / "config.json").write_text("{}")
    # Run
    start = time.perf_counter()
    model, tokenizer = load_judge(device="cpu")
    first_seconds = time.perf_counter() - start
    start = time.perf_counter()
    again, _ = load_judge(device="cpu")
    second_seconds = time.perf_counter() - start
    # Assert: a complete plain checkpoint replaced the leftover, nothing temporary remains, reload is fast
    assert {"config.json", "model.safetensors", "tokenizer_config.json"} <= {p.name for p in broken.iterdir()}
    assert not [p for p in (tmp_path / "models").iterdir() if p.name.startswith(".")]
    assert second_seconds < first_seconds and second_seconds < 20
    assert model.config.num_hidden_layers == 30 and model.config.hidden_size == 576
    for (name, p), (_, q) in zip(model.named_parameters(), again.named_parameters()):
        assert torch.equal(p, q), name
    # Known answer: a converted weight equals the GGUF tensor dequantized independently by the gguf package.
    import gguf

    from ehrjudge.judge.model import GGUF_FILE, gguf_folder

    reader = gguf.GGUFReader(gguf_folder() / GGUF_FILE)
    tensor = next(t for t in reader.tensors if t.name == "blk.0.ffn_down.weight")
    expected = torch.from_numpy(gguf.quants.dequantize(tensor.data, tensor.tensor_type).copy())
    torch.testing.assert_close(model.model.layers[0].mlp.down_proj.weight, expected, atol=0, rtol=0)
    with torch.no_grad():
        probs = LabelScorer(tokenizer).log_probs(model, [build_prompt(PROMPT_TEXT, tokenizer)]).exp()
    assert abs(probs.sum().item() - 1) < 1e-5
