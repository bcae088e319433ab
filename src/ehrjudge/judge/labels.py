"""The judge's answers: the labels "1".."10" as token sequences of a tokenizer, and their exact probabilities.

LabelScorer tokenizes the prompts and the answers (each label's tokens, then the end-of-turn token) and reads the
exact, renormalized distribution over the answers from the forward pass in judge/forward.py (the label trie, its
tree attention mask, the label sums and the shared-prefix cache live there).
"""

from __future__ import annotations

import torch

from ehrjudge.judge import forward
from ehrjudge.judge.forward import LabelTrie, SharedPrefix, common_prefix_length

LABELS = tuple(range(1, 11))
END_OF_TURN_CANDIDATES = ("<|im_end|>", "<|eot_id|>", "<end_of_turn>", "<|end|>")


def end_of_turn_id(tokenizer) -> int:
    """The token a chat model emits to end its turn (<|im_end|> for ChatML models like SmolLM2)."""
    vocab = tokenizer.get_vocab()
    for token in END_OF_TURN_CANDIDATES:
        if token in vocab:
            return vocab[token]
    if tokenizer.eos_token_id is None:
        raise ValueError("tokenizer has neither an end-of-turn token nor an eos token")
    return tokenizer.eos_token_id


class LabelScorer:
    """Exact, renormalized log-probabilities of the answers "1".."10" (or other `labels`, e.g. the pairwise judge's
    "A"/"B") for a batch of prompts."""

    def __init__(self, tokenizer, labels: tuple[int | str, ...] = LABELS):
        self.tokenizer = tokenizer
        self.labels = tuple(labels)
        self.end_id = end_of_turn_id(tokenizer)
        self.sequence_token_ids: list[list[int]] = []
        for label in self.labels:
            ids = tokenizer.encode(str(label), add_special_tokens=False)
            if not ids:
                raise ValueError(f"label {label} encodes to no tokens")
            self.sequence_token_ids.append(list(ids) + [self.end_id])
        self.trie = LabelTrie.build(self.sequence_token_ids)

    def tokenize(self, prompts: list[str]) -> list[list[int]]:
        """Token ids of each prompt; the chat template already holds the special tokens."""
        return self.tokenizer(list(prompts), add_special_tokens=False)["input_ids"]

    def encode(self, prompts: list[str], device) -> dict[str, torch.Tensor]:
        """Left-padded input ids and attention mask."""
        return forward.pad_left(self.tokenize(prompts), self.pad_id, device)

    @property
    def pad_id(self) -> int:
        pad = self.tokenizer.pad_token_id
        return self.end_id if pad is None else pad

    def shared_prefix(self, model, prompts: list[str], layer: int | None = None) -> SharedPrefix:
        """KV cache of the token prefix common to all `prompts` (system + instruction), computed once, no grad.

        Reuse it only with the same model weights: it is a snapshot of the model at this call. `layer`: also keep
        that decoder layer's input for the prefix tokens (SharedPrefix.layer_input).
        """
        ids = self.tokenize(prompts)
        common = common_prefix_length(ids)
        if common == 0:
            raise ValueError("prompts share no token prefix")
        return forward.shared_prefix(model, ids[0][:common], layer)

    def prefix_cache(self, model, token_ids) -> "SharedPrefix":
        """KV cache of `token_ids`, a prefix the prompts it serves all start with (no grad): judge/forward.py's."""
        return forward.shared_prefix(model, list(token_ids))

    def log_probs(self, model, prompts: list[str], batch_size: int | None = None,
                  prefix: SharedPrefix | None = None) -> torch.Tensor:
        """(B, 10) log q_k; rows logsumexp to 0. Differentiable under grad; wrap in torch.no_grad() otherwise.

        `prefix` (from shared_prefix, inference only): skip recomputing the common prompt prefix.
        """
        if len(prompts) == 0:
            raise ValueError("no prompts to score")
        if prefix is not None and torch.is_grad_enabled():
            raise ValueError("a cached prefix carries no gradient; call without prefix when training")
        size = batch_size or len(prompts)
        chunks = [torch.log_softmax(self.sequence_log_probs(model, prompts[i:i + size], prefix), dim=-1)
                  for i in range(0, len(prompts), size)]
        return torch.cat(chunks, dim=0)

    def log_probs_and_inputs(self, model, prompts: list[str], layer: int,
                             prefix: SharedPrefix | None = None) -> tuple[torch.Tensor, forward.Rows]:
        """(B, 10) log q_k without grad, and decoder layer `layer`'s inputs per prompt (forward.upper_sequence_log_probs
        takes them): (T_i, H) for its tokens after `prefix`, (N, H) for its trie nodes."""
        with torch.no_grad():
            sums, rows = forward.sequence_log_probs_and_inputs(model, layer, self.tokenize(prompts), self.trie,
                                                               self.pad_id, prefix)
        return torch.log_softmax(sums, dim=-1), rows

    def sequence_log_probs(self, model, prompts: list[str], prefix: SharedPrefix | None = None,
                           one_pass: bool | None = None) -> torch.Tensor:
        """(B, 10) unnormalized log p(s_k | x), the full answer-sequence log-likelihoods (forward.sequence_log_probs:
        one_pass by default under grad)."""
        return forward.sequence_log_probs(model, self.tokenize(prompts), self.trie, self.pad_id, prefix, one_pass)
