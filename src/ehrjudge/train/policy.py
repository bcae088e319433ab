"""The judge as a policy over the 10 labels: trainable log-probs, the frozen reference, per-record caches.

Two ways to get log pi(k|x) for a batch of records, with identical results (tests/test_train_policy.py):

* plain: `LabelScorer.log_probs(model, prompts)` (ehrjudge.judge.labels): the whole model, every step.
* cached lower layers (train_layers = L > 0, cache_lower_layers): only the top L decoder layers are trained,
  so the input of layer K = n_layers - L, for the prompt tokens and for the label-trie tokens, never changes.
  It is captured once per record (a forward pre-hook on layer K during one frozen LabelScorer pass, which
  yields the reference log-probs pi_ref in the same pass) and every later step runs only layers K.. + norm +
  lm_head on [prompt ; trie] with one 4D mask (prompt: causal over real tokens; trie node: the prompt and its
  own ancestors), position of a trie node = last prompt position + depth, as LabelScorer does with its cache.

Measured (SmolLM2-135M, 2 shared CPU cores): see docs/training.md and the table in benchmarks/train_judge.py.
The reference never changes, so its 10 log-probs are cached per record id (kl_coef = 0 never computes it).
"""

from __future__ import annotations

import contextlib
import logging

import torch

from ehrjudge.judge.labels import LabelScorer

log = logging.getLogger(__name__)


def base_causal_lm(model):
    """The underlying *ForCausalLM of a plain or PEFT-wrapped model."""
    return model.get_base_model() if hasattr(model, "get_base_model") else model


def adapter_disabled(model):
    """Context in which a PEFT model computes the frozen base (the reference); a plain model has none."""
    return model.disable_adapter() if hasattr(model, "disable_adapter") else contextlib.nullcontext()


class LabelPolicy:
    """log pi(.|x) (B, 10) for records addressed by index into `prompts`, with the caches described above."""

    def __init__(self, model, tokenizer, prompts: list[str], train_layers: int, cache_lower_layers: bool):
        self.model = model
        self.scorer = LabelScorer(tokenizer)
        self.prompts = prompts
        decoder = base_causal_lm(model).model
        self.n_layers = len(decoder.layers)
        self.split = self.n_layers - train_layers if (train_layers and cache_lower_layers) else None
        self.reference_cache: dict[int, torch.Tensor] = {}  # record index -> (10,) log pi_ref
        self.hidden_cache: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}  # index -> ((T, H), (N, H))
        self.reference_calls = 0  # counted for the "kl_coef 0 computes no reference" test

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    # Trainable log-probs ---------------------------------------------------------------------------------------
    def log_probs(self, indices: list[int]) -> torch.Tensor:
        """(B, 10) log pi(k|x) under the current weights; differentiable when grad is enabled."""
        if self.split is None:
            return self.scorer.log_probs(self.model, [self.prompts[i] for i in indices])
        self._fill_hidden([i for i in indices if i not in self.hidden_cache], keep_reference=False)
        return self._upper_log_probs(indices)

    def reference(self, indices: list[int]) -> torch.Tensor:
        """(B, 10) log pi_ref(k|x) of the frozen base, computed once per record."""
        self.reference_calls += 1
        missing = [i for i in indices if i not in self.reference_cache]
        if missing:
            if self.split is None:
                with torch.no_grad(), adapter_disabled(self.model):
                    values = self.scorer.log_probs(self.model, [self.prompts[i] for i in missing])
                self.reference_cache.update({i: v for i, v in zip(missing, values)})
            else:
                self._fill_hidden(missing, keep_reference=True)
        return torch.stack([self.reference_cache[i] for i in indices])

    # Lower-layer cache --------------------------------------------------------------------------------------------
    def _fill_hidden(self, indices: list[int], keep_reference: bool) -> None:
        """One frozen LabelScorer pass: capture layer K's inputs (prompt, trie) and the reference log-probs."""
        if not indices:
            return
        captured: list[torch.Tensor] = []
        layer = base_causal_lm(self.model).model.layers[self.split]
        handle = layer.register_forward_pre_hook(
            lambda module, args, kwargs: captured.append((args[0] if args else kwargs["hidden_states"]).detach()),
            with_kwargs=True)
        try:
            # Layers below K carry no adapter, so only a pass that also keeps the reference switches it off.
            switch = adapter_disabled(self.model) if keep_reference else contextlib.nullcontext()
            with torch.no_grad(), switch:
                # Two-step scoring (prompt forward, then the trie step on its KV cache): two captures.
                sequences = self.scorer.sequence_log_probs(self.model, [self.prompts[i] for i in indices],
                                                           one_pass=False)
                reference = torch.log_softmax(sequences, dim=-1)  # (B, 10)
        finally:
            handle.remove()
        prompt_hidden, trie_hidden = captured  # (B, T, H), (B, N, H): the prompt forward, then the trie step
        mask = self.scorer.encode([self.prompts[i] for i in indices], self.device)["attention_mask"].bool()
        for row, index in enumerate(indices):
            self.hidden_cache[index] = (prompt_hidden[row][mask[row]].clone(), trie_hidden[row].clone())
            if keep_reference:
                self.reference_cache[index] = reference[row]

    def _upper_log_probs(self, indices: list[int]) -> torch.Tensor:
        """Layers K.. + final norm + lm_head on the cached layer-K inputs, then the LabelScorer trie sums."""
        causal_lm = base_causal_lm(self.model)
        decoder = causal_lm.model
        trie = self.scorer.trie
        prompt_parts = [self.hidden_cache[i][0] for i in indices]
        lengths = torch.tensor([p.shape[0] for p in prompt_parts])
        batch, longest, n_nodes = len(indices), int(lengths.max()), len(trie.node_tokens)
        width = prompt_parts[0].shape[1]
        hidden = torch.zeros(batch, longest + n_nodes, width, dtype=prompt_parts[0].dtype)  # (B, T+N, H)
        real = torch.zeros(batch, longest, dtype=torch.bool)  # left padding
        for row, index in enumerate(indices):
            prompt, nodes = self.hidden_cache[index]
            hidden[row, longest - prompt.shape[0]:longest] = prompt
            hidden[row, longest:] = nodes
            real[row, longest - prompt.shape[0]:] = True
        prompt_positions = (real.long().cumsum(-1) - 1).clamp(min=0)  # (B, T)
        depths = torch.tensor(trie.node_depths)
        positions = torch.cat([prompt_positions, (lengths - 1)[:, None] + depths[None, :]], dim=1)  # (B, T+N)
        allowed = torch.zeros(batch, longest + n_nodes, longest + n_nodes, dtype=torch.bool)
        causal = torch.tril(torch.ones(longest, longest, dtype=torch.bool))
        allowed[:, :longest, :longest] = causal[None] & real[:, None, :]
        allowed[:, :longest, :longest] |= torch.eye(longest, dtype=torch.bool)[None]  # pad rows: no empty row
        allowed[:, longest:, :longest] = real[:, None, :]
        allowed[:, longest:, longest:] = self.scorer._ancestors[None]
        device, dtype = self.device, hidden.dtype
        mask = torch.zeros(batch, 1, *allowed.shape[1:], dtype=dtype)
        mask.masked_fill_(~allowed[:, None], torch.finfo(dtype).min)  # additive 4D mask (sdpa and eager)
        hidden, mask, positions = hidden.to(device), mask.to(device), positions.to(device)
        rotary = decoder.rotary_emb(hidden, position_ids=positions)
        for layer in decoder.layers[self.split:]:
            hidden = layer(hidden, attention_mask=mask, position_ids=positions, position_embeddings=rotary)
        keep = torch.cat([torch.tensor([longest - 1]), torch.arange(longest, longest + n_nodes)]).to(device)
        logits = causal_lm.lm_head(decoder.norm(hidden[:, keep]))  # (B, 1+N, V)
        log_softmax = torch.log_softmax(logits.float(), dim=-1)
        columns = []
        for steps in trie.steps:
            total = 0.0
            for node, token in steps:
                total = total + log_softmax[:, node + 1, token]  # node -1 = the prompt's last position
            columns.append(total)
        return torch.log_softmax(torch.stack(columns, dim=1), dim=-1)  # (B, 10)
