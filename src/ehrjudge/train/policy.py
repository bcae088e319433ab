"""The judge as a policy over the 10 labels: trainable log-probs, the frozen reference, per-record caches.

Two ways to get log pi(k|x) for a batch of records, with identical results (tests/test_train_policy.py):

* plain: `LabelScorer.log_probs(model, prompts)` (ehrjudge.judge.labels): the whole model, every step.
* cached lower layers (train_layers = L > 0, cache_lower_layers): only the top L decoder layers are trained,
  so the input of layer K = n_layers - L, for the prompt tokens and for the label-trie tokens, never changes.
  It is captured once per record (a forward pre-hook on layer K during one frozen LabelScorer pass, which
  yields the reference log-probs pi_ref in the same pass) and every later step runs only layers K.. + norm +
  lm_head on [prompt ; trie] with one 4D mask (prompt: causal over real tokens; trie node: the prompt and its
  own ancestors), position of a trie node = last prompt position + depth, as LabelScorer does with its cache.

* shared prefix: the system prompt and instruction (~55 of ~182 tokens on the default dataset) are the same
  for every record. Their layer-K input is captured once (from `LabelScorer.shared_prefix`; layers below K are frozen),
  the frozen pass runs on each record's own tokens over the prefix's KV cache, and each training step runs
  layers K.. on the prefix ONCE (batch 1, with grad) and lets every row attend to its keys and values, so the
  gradient still flows through the prefix. Prompts that share no token prefix use the per-row path.

Measured (SmolLM2-135M, 2 shared CPU cores): see docs/training.md and the table in benchmarks/train_judge.py.
The reference never changes, so its 10 log-probs are cached per record id (kl_coef = 0 never computes it).
"""

from __future__ import annotations

import contextlib
import logging
import time

import numpy as np
import torch

from ehrjudge.judge.labels import LABELS, LabelScorer, cache_keyword, common_prefix_length
from ehrjudge.judge.layer_inputs import LayerInputs, base_causal_lm, captured_inputs, prompt_key, split_rows
from ehrjudge.judge.scoring import progress_batches

log = logging.getLogger(__name__)


class PrefixKV:
    """A KV "cache" for calling decoder layers directly: prepends the prefix's keys/values, (1, H_kv, P, D) each,
    broadcast over the batch, to the keys/values of the batch. Records them first when `record` is set."""

    def __init__(self, record: bool = False):
        self.layers: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}
        self.record = record

    def update(self, keys, values, layer_idx, *args, **kwargs):
        if self.record:
            self.layers[layer_idx] = (keys, values)
            return keys, values
        prefix_keys, prefix_values = self.layers[layer_idx]
        batch = keys.shape[0]
        return (torch.cat([prefix_keys.expand(batch, -1, -1, -1), keys], dim=2),
                torch.cat([prefix_values.expand(batch, -1, -1, -1), values], dim=2))


def adapter_disabled(model):
    """Context in which a PEFT model computes the frozen base (the reference); a plain model has none."""
    return model.disable_adapter() if hasattr(model, "disable_adapter") else contextlib.nullcontext()


class LabelPolicy:
    """log pi(.|x) (B, 10) for records addressed by index into `prompts`, with the caches described above."""

    def __init__(self, model, tokenizer, prompts: list[str], train_layers: int, cache_lower_layers: bool,
                 use_prefix: bool = True):
        self.model = model
        self.scorer = LabelScorer(tokenizer)
        self.prompts = prompts
        decoder = base_causal_lm(model).model
        self.n_layers = len(decoder.layers)
        self.split = self.n_layers - train_layers if (train_layers and cache_lower_layers) else None
        self.reference_cache: dict[int, torch.Tensor] = {}  # record index -> (10,) log pi_ref
        self.hidden_cache: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}  # index -> ((T, H), (N, H))
        self.reference_calls = 0  # counted for the "kl_coef 0 computes no reference" test
        self.prefix = None  # LabelScorer SharedPrefix (KV of every layer) at construction, or None
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
        layer = base_causal_lm(self.model).model.layers[self.split]
        with captured_inputs(layer) as captured, torch.no_grad():
            self.prefix = self.scorer.shared_prefix(self.model, self.prompts)
        self.prefix_hidden = captured[0][0].clone()  # (P, H)

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
        layer = base_causal_lm(self.model).model.layers[self.split]
        prefix = self._prefix_for(keep_reference)  # before the capture starts: its forward is not a record's
        # Layers below K carry no adapter, so only a pass that also keeps the reference switches it off.
        switch = adapter_disabled(self.model) if keep_reference else contextlib.nullcontext()
        with captured_inputs(layer) as captured, torch.no_grad(), switch:
            # Two-step scoring (prompt forward, then the trie step on its KV cache): two captures.
            sequences = self.scorer.sequence_log_probs(self.model, [self.prompts[i] for i in indices],
                                                       prefix=prefix, one_pass=False)
            reference = torch.log_softmax(sequences, dim=-1)  # (B, 10)
        prompt_hidden, trie_hidden = captured  # (B, T, H), (B, N, H): the prompt forward, then the trie step
        skip = len(self.prefix.token_ids) if self.prefix is not None else 0  # the prefix is held once, apart
        lengths = [len(x) - skip for x in self.scorer.tokenize([self.prompts[i] for i in indices])]
        for row, (index, inputs) in enumerate(zip(indices, split_rows(prompt_hidden, trie_hidden, lengths))):
            self.hidden_cache[index] = inputs
            if keep_reference:
                self.reference_cache[index] = reference[row]

    def _upper_log_probs(self, indices: list[int]) -> torch.Tensor:
        """Layers K.. + final norm + lm_head on the cached layer-K inputs, then the LabelScorer trie sums.

        Row layout: [shared prefix (as keys/values only)][left padding][own prompt tokens][trie nodes].
        """
        causal_lm = base_causal_lm(self.model)
        decoder = causal_lm.model
        trie = self.scorer.trie
        device = self.device
        prompt_parts = [self.hidden_cache[i][0] for i in indices]
        lengths = torch.tensor([p.shape[0] for p in prompt_parts])
        batch, longest, n_nodes = len(indices), int(lengths.max()), len(trie.node_tokens)
        width, dtype = prompt_parts[0].shape[1], prompt_parts[0].dtype
        hidden = torch.zeros(batch, longest + n_nodes, width, dtype=dtype)  # (B, T+N, H)
        real = torch.zeros(batch, longest, dtype=torch.bool)  # left padding
        for row, index in enumerate(indices):
            prompt, nodes = self.hidden_cache[index]
            hidden[row, longest - prompt.shape[0]:longest] = prompt
            hidden[row, longest:] = nodes
            real[row, longest - prompt.shape[0]:] = True
        n_prefix = 0 if self.prefix_hidden is None else self.prefix_hidden.shape[0]
        prompt_positions = n_prefix + (real.long().cumsum(-1) - 1).clamp(min=0)  # (B, T)
        depths = torch.tensor(trie.node_depths)
        positions = torch.cat([prompt_positions, (n_prefix + lengths - 1)[:, None] + depths[None, :]], dim=1)
        allowed = torch.zeros(batch, longest + n_nodes, n_prefix + longest + n_nodes, dtype=torch.bool)
        allowed[:, :, :n_prefix] = True  # every row sees the whole shared prefix
        own = slice(n_prefix, n_prefix + longest)
        causal = torch.tril(torch.ones(longest, longest, dtype=torch.bool))
        allowed[:, :longest, own] = causal[None] & real[:, None, :]
        allowed[:, :longest, own] |= torch.eye(longest, dtype=torch.bool)[None]  # pad rows: no empty row
        allowed[:, longest:, own] = real[:, None, :]
        allowed[:, longest:, n_prefix + longest:] = self.scorer._ancestors[None]
        mask = additive_mask(allowed[:, None], dtype)  # (B, 1, T+N, P+T+N)
        hidden, mask, positions = hidden.to(device), mask.to(device), positions.to(device)
        layers = decoder.layers[self.split:]
        cache_kwargs = {}
        if n_prefix:
            # The prefix through the trainable layers once per step, with grad; rows attend to its keys/values.
            recorder = PrefixKV(record=True)
            argument = cache_keyword(layers[0])
            prefix_hidden = self.prefix_hidden.to(device)[None]  # (1, P, H)
            prefix_positions = torch.arange(n_prefix, device=device)[None]  # (1, P)
            prefix_mask = additive_mask(torch.tril(torch.ones(n_prefix, n_prefix, dtype=torch.bool))[None, None],
                                        dtype).to(device)  # (1, 1, P, P)
            prefix_rotary = decoder.rotary_emb(prefix_hidden, position_ids=prefix_positions)
            for layer in layers:
                prefix_hidden = layer(prefix_hidden, attention_mask=prefix_mask, position_ids=prefix_positions,
                                      position_embeddings=prefix_rotary, **{argument: recorder})
            recorder.record = False  # from now on it prepends what it recorded
            cache_kwargs = {argument: recorder}
        rotary = decoder.rotary_emb(hidden, position_ids=positions)
        for layer in layers:
            hidden = layer(hidden, attention_mask=mask, position_ids=positions, position_embeddings=rotary,
                           **cache_kwargs)
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


def judge_from_layer_inputs(model, tokenizer, prompts: list[str], inputs: LayerInputs, batch_size: int = 16,
                            description: str = "judging (upper layers)") -> np.ndarray | None:
    """(N, 10) label log-probs of `model` on `prompts`, running only layers inputs.layer.. on saved inputs.

    None (the reason logged) when the inputs do not fit: other prompts, or other weights below that layer.
    Same numbers as judge.scoring.judge_prompts on the whole model, up to float rounding (tests/test_layer_inputs.py).
    """
    scorer = LabelScorer(tokenizer)
    token_ids = scorer.tokenize(prompts)
    why = inputs.mismatch(model, token_ids, scorer.trie.node_tokens)
    if why is not None:
        log.warning("saved layer-%d inputs not used (%s): running the whole model", inputs.layer, why)
        return None
    n_layers = len(base_causal_lm(model).model.layers)
    policy = LabelPolicy(model, tokenizer, prompts, n_layers - inputs.layer, cache_lower_layers=True,
                         use_prefix=False)
    saved = {key: j for j, key in enumerate(inputs.prompt_keys)}
    for i, ids in enumerate(token_ids):
        j = saved[prompt_key(ids)]
        policy.hidden_cache[i] = (inputs.own[j], inputs.trie[j])
    policy.prefix_hidden = inputs.prefix
    order = np.argsort([len(x) for x in token_ids], kind="stable")
    out = np.empty((len(prompts), len(LABELS)), dtype=np.float64)
    start = time.perf_counter()
    with torch.no_grad():
        for index in progress_batches(order, batch_size, description):
            out[index] = policy._upper_log_probs(index.tolist()).double().cpu().numpy()
    elapsed = time.perf_counter() - start
    log.info("judged %d prompts on layers %d.. in %.1f s: %.2f records/s", len(prompts), inputs.layer, elapsed,
             len(prompts) / max(elapsed, 1e-9))
    return out


def additive_mask(allowed: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """0 where attention is allowed, the dtype's minimum elsewhere (works for sdpa and eager)."""
    return torch.zeros(allowed.shape, dtype=dtype).masked_fill_(~allowed, torch.finfo(dtype).min)
