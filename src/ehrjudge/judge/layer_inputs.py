"""The input of one decoder layer K, kept from a judging pass, for a later judge that differs only in layers K..

A judge trained with `train_layers = L` (LoRA or full fine-tuning of the top L layers) computes exactly what its
base model computes below layer K = n_layers - L. So once the base model has judged a set of prompts (the
pipeline's zero-shot stage), the trained judge needs only layers K.. + norm + lm_head on the kept inputs
(judge.scoring.judge_from_layer_inputs, which runs judge.forward.upper_sequence_log_probs): 4 of 30 layers for
SmolLM2-135M with the default train_layers 4.

What is kept per prompt: layer K's input for its own tokens (after the prompt prefix shared by all prompts, held
once) and for the label-trie tokens of the two-step scoring (judge.forward). The inputs fit a model only when
`weights_sha` (a SHA-256 over the model config and every tensor the lower layers read: embeddings, layers < K,
rotary buffers), the label-trie tokens and each prompt's token ids match; `mismatch` says why not, and the
caller then runs the whole model.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import pickle
from pathlib import Path

import torch

from ehrjudge.errors import InputError
from ehrjudge.io import atomic_file
from ehrjudge.judge.forward import base_causal_lm

# Config entries that do not change what the layers compute (paths, versions, output switches).
CONFIG_IGNORED = {"transformers_version", "architectures", "use_cache", "return_dict", "output_attentions",
                  "output_hidden_states", "id2label", "label2id", "problem_type", "dtype", "torch_dtype"}


def lower_weights_sha(model, layer: int) -> str:
    """SHA-256 over the model config and the names, dtypes and bytes of every parameter and buffer that layers below
    `layer` read."""
    causal_lm = base_causal_lm(model)
    decoder = causal_lm.model
    digest = hashlib.sha256()
    config = {k: v for k, v in causal_lm.config.to_dict().items() if not k.startswith("_") and k not in CONFIG_IGNORED}
    digest.update(json.dumps(config, sort_keys=True, default=str).encode())
    modules = [("embed_tokens", decoder.embed_tokens), ("rotary_emb", decoder.rotary_emb)]
    modules += [(f"layers.{i}", decoder.layers[i]) for i in range(layer)]
    for prefix, module in modules:
        for name, tensor in [*module.named_parameters(), *module.named_buffers()]:
            data = tensor.detach().cpu().contiguous()
            digest.update(f"{prefix}.{name}:{data.dtype}:{tuple(data.shape)}".encode())
            digest.update(data.reshape(-1).view(torch.uint8).numpy())  # reshape: 0-dim buffers too
    return digest.hexdigest()


def prompt_key(token_ids: list[int]) -> str:
    return hashlib.sha256(" ".join(map(str, token_ids)).encode()).hexdigest()


@dataclasses.dataclass
class LayerInputs:
    """Layer `layer`'s inputs for a set of prompts (all tensors on CPU, in the model's dtype)."""

    layer: int
    weights_sha: str  # lower_weights_sha of the model that produced them
    trie_tokens: list[int]  # the label-trie's input tokens (judge.forward.LabelTrie.node_tokens), in node order
    prompt_keys: list[str]  # prompt_key of each prompt's full token ids
    own: list[torch.Tensor]  # (T_i, H): prompt i's tokens after the shared prefix
    trie: list[torch.Tensor]  # (N, H): the label-trie tokens of prompt i
    prefix: torch.Tensor | None  # (P, H): the shared prefix's tokens, or None when none was reused

    def mismatch(self, model, token_ids: list[list[int]], trie_tokens: list[int]) -> str | None:
        """Why these inputs do not fit `model` on prompts with these token ids and this label trie, or None."""
        n_layers = len(base_causal_lm(model).model.layers)
        if not 0 <= self.layer < n_layers:
            return f"layer {self.layer} is not one of the model's 0..{n_layers - 1}"
        if list(trie_tokens) != list(self.trie_tokens):
            return "the label tokens differ (another tokenizer or label set)"
        known = set(self.prompt_keys)
        missing = sum(prompt_key(ids) not in known for ids in token_ids)
        if missing:
            return f"{missing} of {len(token_ids)} prompts were not judged in the saved pass"
        if lower_weights_sha(model, self.layer) != self.weights_sha:
            return f"the model's embeddings or layers below {self.layer} differ from the saved pass's"
        return None

    def save(self, path: str | Path) -> None:
        with atomic_file(path) as tmp:
            torch.save({field.name: getattr(self, field.name) for field in dataclasses.fields(self)}, tmp)

    @classmethod
    def load(cls, path: str | Path) -> "LayerInputs":
        try:
            inputs = cls(**torch.load(path, weights_only=True))
        except (OSError, RuntimeError, TypeError, EOFError, pickle.UnpicklingError) as error:
            raise InputError(f"cannot read saved layer inputs: {error}", file=path) from error
        if not len(inputs.prompt_keys) == len(inputs.own) == len(inputs.trie):
            raise InputError(f"saved layer inputs hold {len(inputs.prompt_keys)} prompt keys, {len(inputs.own)} prompt "
                             f"and {len(inputs.trie)} trie tensors", file=path)
        return inputs


@dataclasses.dataclass
class LayerCapture:
    """Asks a judging pass (judge.scoring.judge_prompts) to keep layer `layer`'s inputs in `result`."""

    layer: int  # decoder layer index; negative counts from the top, as in Python (-4: K = n_layers - 4)
    result: LayerInputs | None = None

    def resolved(self, n_layers: int) -> int:
        if not -n_layers <= self.layer < n_layers:
            raise ValueError(f"layer {self.layer} does not exist in a model of {n_layers} layers")
        return self.layer % n_layers
