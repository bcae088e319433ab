"""The judge as a policy over the 10 labels: trainable log-probs, the frozen reference, per-record caches.

The forward pass itself is judge/forward.py; this module decides what is cached and when. Two ways to get
log pi(k|x) for a batch of records, with identical results (tests/test_train_policy.py):

* plain: `LabelScorer.log_probs(model, prompts)`: the whole model, every step.
* cached lower layers (train_layers = L > 0, cache_lower_layers): only the top L decoder layers are trained,
  so the input of layer K = n_layers - L, for the prompt tokens and for the label-trie tokens, never changes.
  It is captured once per record (during one frozen two-step pass, which yields the reference log-probs pi_ref
  in the same pass) and every later step runs only layers K.. + norm + lm_head on it
  (`forward.upper_sequence_log_probs`).
* shared prefix: the system prompt and instruction (~55 of ~182 tokens on the default dataset) are the same
  for every record. Their layer-K input is captured once (layers below K are frozen), the frozen pass runs on
  each record's own tokens over the prefix's KV cache, and each training step runs layers K.. on the prefix
  ONCE (batch 1, with grad) and lets every row attend to its keys and values, so the gradient still flows
  through the prefix. Prompts that share no token prefix use the per-row path.

Measured (SmolLM2-135M, 2 shared CPU cores): see docs/training.md and the table in benchmarks/train_judge.py.
The reference never changes, so its 10 log-probs are cached per record id (kl_coef = 0 never computes it).
"""

from __future__ import annotations

import contextlib
import logging

import torch

from ehrjudge.judge.forward import (common_prefix_length, decoder_layers, last_hidden, upper_final_hidden,
                                   upper_sequence_log_probs)
from ehrjudge.judge.labels import LABELS, LabelScorer
from ehrjudge.judge.scoring import judge_from_layer_inputs  # noqa: F401  (its old home; tests/test_layer_inputs.py)

log = logging.getLogger(__name__)


def adapter_disabled(model):
    """Context in which a PEFT model computes the frozen base (the reference); a plain model has none."""
    return model.disable_adapter() if hasattr(model, "disable_adapter") else contextlib.nullcontext()


class LabelPolicy:
    """log pi(.|x) (B, L) over `labels` (the judge's 10 by default; 'A'/'B' for the pairwise judge) for records
    addressed by index into `prompts`, with the caches described above; or the last token's final hidden state
    (the Bradley-Terry reward model's input)."""

    def __init__(self, model, tokenizer, prompts: list[str], train_layers: int, cache_lower_layers: bool,
                 use_prefix: bool = True, labels: tuple = LABELS):
        self.model = model
        self.scorer = LabelScorer(tokenizer, labels)
        self.prompts = prompts
        self.n_layers = len(decoder_layers(model))
        self.split = self.n_layers - train_layers if (train_layers and cache_lower_layers) else None
        self.reference_cache: dict[int, torch.Tensor] = {}  # record index -> (10,) log pi_ref
        self.hidden_cache: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}  # index -> ((T, H), (N, H))
        self.reference_calls = 0  # counted for the "kl_coef 0 computes no reference" test
        self.prefix = None  # forward.SharedPrefix (KV of every layer, layer-K input) at construction, or None
        self._reference_prefix = None  # the same with the adapter off, made when a reference is first needed
        self.prefix_hidden: torch.Tensor | None = None  # (P, H) layer-K input of the prefix tokens
        if self.split is not None and use_prefix:
            self._capture_prefix()

    def _capture_prefix(self) -> None:
        """The common token prefix of all prompts: its KV cache and its layer-K input (frozen layers only).

        The adapter is left as it is: with kl_coef 0 nothing ever switches it (no reference path at all).
        """
        if common_prefix_length(self.scorer.tokenize(self.prompts)) == 0:
            log.info("prompts share no token prefix: each row runs its whole prompt")
            return
        self.prefix = self.scorer.shared_prefix(self.model, self.prompts, layer=self.split)
        self.prefix_hidden = self.prefix.layer_input  # (P, H)

    def _prefix_for(self, keep_reference: bool):
        """The prefix KV for a frozen pass. Only a pass that keeps the reference reads the upper layers' output,
        so only it needs their keys/values of the frozen base (adapter off)."""
        if self.prefix is None or not keep_reference:
            return self.prefix
        if self._reference_prefix is None:
            with torch.no_grad(), adapter_disabled(self.model):
                self._reference_prefix = self.scorer.shared_prefix(self.model, self.prompts)
        return self._reference_prefix

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    # Trainable log-probs ---------------------------------------------------------------------------------------
    def log_probs(self, indices: list[int]) -> torch.Tensor:
        """(B, L) log pi(k|x) under the current weights; differentiable when grad is enabled."""
        if self.split is None:
            return self.scorer.log_probs(self.model, [self.prompts[i] for i in indices])
        self._fill_hidden([i for i in indices if i not in self.hidden_cache], keep_reference=False)
        return self._upper_log_probs(indices)

    def last_hidden(self, indices: list[int]) -> torch.Tensor:
        """(B, H) final hidden state at the last prompt token under the current weights; differentiable."""
        if self.split is None:
            return last_hidden(self.model, self.scorer.tokenize([self.prompts[i] for i in indices]),
                               self.scorer.pad_id)
        self._fill_hidden([i for i in indices if i not in self.hidden_cache], keep_reference=False)
        rows = [self.hidden_cache[i] for i in indices]
        return upper_final_hidden(self.model, self.split, rows, self.scorer.trie, self.prefix_hidden)[:, 0]

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
        """One frozen two-step pass: capture layer K's inputs (prompt, trie) and the reference log-probs."""
        if not indices:
            return
        prefix = self._prefix_for(keep_reference)  # before the capture starts: its forward is not a record's
        # Layers below K carry no adapter, so only a pass that also keeps the reference switches it off.
        switch = adapter_disabled(self.model) if keep_reference else contextlib.nullcontext()
        with switch:
            reference, rows = self.scorer.log_probs_and_inputs(self.model, [self.prompts[i] for i in indices],
                                                               self.split, prefix)  # (B, 10), per-row inputs
        for row, (index, inputs) in enumerate(zip(indices, rows)):
            self.hidden_cache[index] = inputs
            if keep_reference:
                self.reference_cache[index] = reference[row]

    def _upper_log_probs(self, indices: list[int]) -> torch.Tensor:
        """(B, 10) log pi from layers K.. on the cached layer-K inputs (and the shared prefix's, when held)."""
        rows = [self.hidden_cache[i] for i in indices]
        sums = upper_sequence_log_probs(self.model, self.split, rows, self.scorer.trie, self.prefix_hidden)
        return torch.log_softmax(sums, dim=-1)
