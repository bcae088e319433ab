"""A tiny random Llama with the real SmolLM2 tokenizer, for tests and smoke runs (no network, ~1 s)."""

from __future__ import annotations

from pathlib import Path

import torch

from ehrjudge.io import atomic_dir
from ehrjudge.judge.model import GGUF_FILE, gguf_folder, prepare_tokenizer
from ehrjudge.paths import cache_dir

TOKENIZER_CACHE = "smollm2-tokenizer"


def smollm2_tokenizer():
    """The SmolLM2 tokenizer (read from the GGUF once, then cached as a plain tokenizer dir), left padding."""
    from transformers import AutoTokenizer

    target = cache_dir("models") / TOKENIZER_CACHE
    if not (target / "tokenizer_config.json").exists():
        tokenizer = AutoTokenizer.from_pretrained(gguf_folder(), gguf_file=GGUF_FILE)
        with atomic_dir(target) as tmp:
            tokenizer.save_pretrained(tmp)
    return prepare_tokenizer(AutoTokenizer.from_pretrained(target))


def tiny_judge(seed: int = 0, layers: int = 2, hidden: int = 64, init_scale: float = 0.2):
    """(model, tokenizer): a randomly initialized 2-layer Llama over the SmolLM2 vocabulary, in eval mode.

    `init_scale` is the weight init std; larger than the usual 0.02 so the label distribution is far from uniform.
    """
    from transformers import LlamaConfig, LlamaForCausalLM

    tokenizer = smollm2_tokenizer()
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=hidden, intermediate_size=2 * hidden,
                         num_hidden_layers=layers, num_attention_heads=4, num_key_value_heads=2,
                         max_position_embeddings=4096, initializer_range=init_scale,
                         bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                         pad_token_id=tokenizer.pad_token_id, tie_word_embeddings=True)
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config).eval()
    return model, tokenizer


def save_tiny_judge(path: str | Path, seed: int = 0) -> Path:
    """Write a tiny judge checkpoint (model + tokenizer) usable as `--model PATH`."""
    model, tokenizer = tiny_judge(seed=seed)
    path = Path(path)
    with atomic_dir(path) as tmp:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
    return path
