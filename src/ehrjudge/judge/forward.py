"""The judge's forward pass, in one module: the label trie and its tree attention mask, the label-sequence sums,
the shared-prefix KV cache, and decoder layers K.. run on given layer-K inputs.

Exact probability of each complete answer "1".."10" (label tokens followed by the end-of-turn token). For label k
with token sequence s_k = (t_1, ..., t_m, <end>) and prompt x:

    log p(s_k | x) = sum_j log p(t_j | x, t_<j)                    (chain rule: label_sums)
    log q_k        = log p(s_k | x) - logsumexp_k' log p(s_k' | x)   (renormalized over the labels, by the callers)

Only the answers are scored, never sampled, so "10" (two tokens for SmolLM2: "1","0") is as exact as "7". Every
distinct proper prefix of the label sequences (a trie: "1".."9" and "1 0" for SmolLM2) is fed as ONE short
continuation per record with a tree attention mask (tree_attention): each trie node attends to the prompt and to
its own ancestors only, at position (last prompt position) + depth. That yields p(<end>|d), p("0"|"1") and
p(<end>|"10") without copying the prompt per branch.

Three ways to run it, with the same numbers (tests/test_judge_forward.py checks each against a plain forward of
prompt + answer):
* two-step (inference): one forward of the decoder over the left-padded prompts fills the KV cache; the trie nodes
  then go over that cache, and the last prompt position's and the nodes' hidden states go through lm_head together
  (head_log_probs, the one place logits are made). A SharedPrefix holds the
  KV of the token prefix common to all prompts (system + instruction), computed once.
* one pass (under grad): prompt and trie nodes in ONE forward with a 4-D mask (causal over the prompt, the tree
  over the nodes): no KV cache, so it also works with gradient checkpointing.
* upper layers: decoder layers K.. + norm + lm_head on given layer-K inputs of each prompt's own tokens and its trie
  nodes (captured by a two-step pass: judge.layer_inputs, train.policy). A shared prefix runs through the layers
  once (batch 1) and every row attends to its keys and values (PrefixKV), so a gradient still flows through it.

Cost, measured by benchmarks/judge_throughput.py (SmolLM2-135M, fp32, 2 CPU cores shared with other jobs, so noisy;
batch 8 of ~300-token prompts): the continuation step (10 tree tokens per record) added 5.8% and 8.3% (two runs)
to the time of the prompt forward.
"""

from __future__ import annotations

import contextlib
import dataclasses

import torch

from ehrjudge.errors import InputError
from ehrjudge.judge.compat import cache_keyword, cache_tensors, new_dynamic_cache, returned_cache

Rows = list[tuple[torch.Tensor, torch.Tensor]]  # per prompt: layer-K inputs of its own tokens (T_i, H), trie (N, H)


@dataclasses.dataclass(frozen=True)
class LabelTrie:
    """The distinct proper prefixes of the label sequences, as tree nodes fed after the prompt."""

    node_tokens: tuple[int, ...]  # token of each node (the last token of its prefix)
    node_parents: tuple[int, ...]  # parent node index, -1 = the prompt itself
    node_depths: tuple[int, ...]  # prefix length (1 = first label token)
    # For each label, for each token position j: (node whose logits predict token j, -1 = prompt, token id).
    steps: tuple[tuple[tuple[int, int], ...], ...]

    @classmethod
    def build(cls, sequences: list[list[int]]) -> "LabelTrie":
        index: dict[tuple[int, ...], int] = {}
        tokens, parents, depths = [], [], []
        steps = []
        for sequence in sequences:
            label_steps = []
            for j, token in enumerate(sequence):
                prefix = tuple(sequence[:j])
                if prefix and prefix not in index:
                    index[prefix] = len(tokens)
                    tokens.append(prefix[-1])
                    parents.append(index[prefix[:-1]] if len(prefix) > 1 else -1)
                    depths.append(len(prefix))
                label_steps.append((index[prefix] if prefix else -1, token))
            steps.append(tuple(label_steps))
        return cls(tuple(tokens), tuple(parents), tuple(depths), tuple(steps))

    def ancestor_mask(self) -> torch.Tensor:
        """(N, N) bool: node i may attend to node j (j is i or an ancestor of i)."""
        n = len(self.node_tokens)
        mask = torch.zeros(n, n, dtype=torch.bool)
        for i in range(n):
            j = i
            while j != -1:
                mask[i, j] = True
                j = self.node_parents[j]
        return mask


def base_causal_lm(model):
    """The underlying *ForCausalLM of a plain or PEFT-wrapped model."""
    return model.get_base_model() if hasattr(model, "get_base_model") else model


def merged(model):
    """The plain causal LM of a judge: a PEFT adapter folded into its base weights (W + (alpha / r) B A), in place
    (PEFT's merge_and_unload); a model without an adapter as it is."""
    return model.merge_and_unload() if hasattr(model, "merge_and_unload") else model


# Attributes by which some causal LMs transform lm_head's output (Gemma 2/3, Cohere, Granite); the judge's forward
# computes logits as lm_head(final hidden state) and refuses those models rather than score them wrongly.
LOGIT_TRANSFORMS = ("final_logit_softcapping", "logit_scale", "logits_scaling")


def head_log_probs(model, hidden: torch.Tensor) -> torch.Tensor:
    """(..., V) fp32 log-softmax of lm_head on final (normed) hidden states (..., H)."""
    causal_lm = base_causal_lm(model)
    transforms = [name for name in LOGIT_TRANSFORMS if getattr(causal_lm.config, name, None) not in (None, 1, 1.0)]
    if transforms:
        raise InputError(f"{type(causal_lm).__name__} transforms its logits ({', '.join(transforms)} in its config); "
                         "the judge's forward supports models whose logits are lm_head(hidden)")
    return torch.log_softmax(causal_lm.lm_head(hidden).float(), dim=-1)


def decoder_layers(model):
    """The decoder layers of a plain or PEFT-wrapped causal LM."""
    return base_causal_lm(model).model.layers


# Masks and positions -----------------------------------------------------------------------------------------------
def tree_attention(real: torch.Tensor, trie: LabelTrie, prompt_rows: bool, n_prefix: int = 0) -> torch.Tensor:
    """Which key each query may attend to, (B, Q, P+T+N) bool, for the layout [shared prefix P][prompt T][trie N].

    `real` (B, T): the prompt's real (not padding) positions. The prefix is seen by every query. Queries are the
    trie nodes, preceded by the prompt's own tokens when `prompt_rows` (causal over its real tokens; a padding row
    sees itself, so that no row is empty). A node sees the real prompt and its own ancestors in the trie.
    """
    batch, length = real.shape
    n = len(trie.node_tokens)
    device = real.device
    sees_prefix = torch.ones(batch, n, n_prefix, dtype=torch.bool, device=device)
    node_rows = torch.cat([sees_prefix, real[:, None, :].expand(batch, n, length),
                           trie.ancestor_mask().to(device)[None].expand(batch, n, n)], dim=-1)  # (B, N, P+T+N)
    if not prompt_rows:
        return node_rows
    causal = torch.ones(length, length, dtype=torch.bool, device=device).tril()
    own = (causal[None] & real[:, None, :]) | torch.eye(length, dtype=torch.bool, device=device)[None]  # (B, T, T)
    prompt = torch.cat([torch.ones(batch, length, n_prefix, dtype=torch.bool, device=device), own,
                        torch.zeros(batch, length, n, dtype=torch.bool, device=device)], dim=-1)  # (B, T, P+T+N)
    return torch.cat([prompt, node_rows], dim=1)  # (B, T+N, P+T+N)


def additive_mask(allowed: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """0 where attention is allowed, the dtype's minimum elsewhere (works for sdpa and eager)."""
    mask = torch.zeros(allowed.shape, dtype=dtype, device=allowed.device)
    return mask.masked_fill_(~allowed, torch.finfo(dtype).min)


def token_positions(real: torch.Tensor, offset: int = 0) -> torch.Tensor:
    """(B, T) position ids of left-padded rows: the real tokens count from `offset` (padding repeats the first)."""
    return offset + (real.long().cumsum(-1) - 1).clamp(min=0)


def node_positions(last_position: torch.Tensor, trie: LabelTrie) -> torch.Tensor:
    """(B, N): a trie node sits at the last prompt token's position (B, 1) + its depth."""
    return last_position + torch.tensor(trie.node_depths, device=last_position.device)[None]


def pad_left(ids: list[list[int]], pad_id: int, device) -> dict[str, torch.Tensor]:
    """Left-padded input ids and attention mask, (B, T) each."""
    width = max(len(x) for x in ids)
    input_ids = torch.tensor([[pad_id] * (width - len(x)) + list(x) for x in ids], device=device)
    attention_mask = torch.tensor([[0] * (width - len(x)) + [1] * len(x) for x in ids], device=device)
    return {"input_ids": input_ids, "attention_mask": attention_mask}


# Label sums --------------------------------------------------------------------------------------------------------
def label_sums(prompt_logp: torch.Tensor, node_logp: torch.Tensor, trie: LabelTrie) -> torch.Tensor:
    """(B, L) log p(s_k | x): each label's token log-probs, read at the prompt's last position (B, V) and at the trie
    nodes (B, N, V), summed along its path (the chain rule above)."""
    columns = []
    for steps in trie.steps:
        total = 0.0
        for node, token in steps:
            total = total + (prompt_logp[:, token] if node == -1 else node_logp[:, node, token])
        columns.append(total)
    return torch.stack(columns, dim=1)


# Shared prefix -----------------------------------------------------------------------------------------------------
def common_prefix_length(ids: list[list[int]]) -> int:
    """Length of the token prefix shared by all sequences; each keeps >= 1 own token for its last-position logits."""
    first = ids[0]
    common = min(len(x) for x in ids) - 1
    for other in ids[1:]:
        common = next((j for j in range(common) if other[j] != first[j]), common)
    return common


@dataclasses.dataclass
class SharedPrefix:
    """Token ids and per-layer (keys, values) of a prompt prefix shared by many prompts."""

    token_ids: tuple[int, ...]
    layers: list[tuple[torch.Tensor, torch.Tensor]]  # per layer: (1, H_kv, P, D) keys and values
    layer_input: torch.Tensor | None = None  # (P, H): one decoder layer's input for these tokens, when asked for

    def expand(self, batch_size: int, config):
        """A fresh DynamicCache holding the prefix for `batch_size` rows (views; the cache concatenates)."""
        cache = new_dynamic_cache(config)
        for index, (keys, values) in enumerate(self.layers):
            cache.update(keys.expand(batch_size, -1, -1, -1), values.expand(batch_size, -1, -1, -1), index)
        return cache


def shared_prefix(model, token_ids: list[int], layer: int | None = None) -> SharedPrefix:
    """The KV cache of `token_ids` under the model's current weights (no grad; a snapshot: reuse it only with the
    same weights). `layer`: also keep that decoder layer's input for the tokens."""
    device = next(model.parameters()).device
    watch = captured_inputs(decoder_layers(model)[layer]) if layer is not None else contextlib.nullcontext([])
    with torch.no_grad(), watch as seen:
        out = model(input_ids=torch.tensor([list(token_ids)], device=device), use_cache=True, logits_to_keep=1)
    layer_input = seen[0][0].clone() if layer is not None else None  # (P, H)
    return SharedPrefix(tuple(token_ids), cache_tensors(returned_cache(out)), layer_input)


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


# The whole model ---------------------------------------------------------------------------------------------------
def sequence_log_probs(model, ids: list[list[int]], trie: LabelTrie, pad_id: int, prefix: SharedPrefix | None = None,
                       one_pass: bool | None = None) -> torch.Tensor:
    """(B, L) log p(s_k | x) of the prompts' token ids `ids`; differentiable under grad.

    one_pass (default: True under grad without a prefix): prompt and trie in a single forward with a 4-D mask, no KV
    cache, so it also works under gradient checkpointing (which turns the cache off in training mode).
    """
    if one_pass is None:
        one_pass = torch.is_grad_enabled() and prefix is None
    if one_pass and prefix is not None:
        raise ValueError("one_pass scoring does not take a cached prefix")
    prompt_logp, node_logp = (_one_pass(model, ids, trie, pad_id) if one_pass
                              else _two_step(model, ids, trie, pad_id, prefix))
    return label_sums(prompt_logp, node_logp, trie)


def sequence_log_probs_and_inputs(model, layer: int, ids: list[list[int]], trie: LabelTrie, pad_id: int,
                                  prefix: SharedPrefix | None = None) -> tuple[torch.Tensor, Rows]:
    """Two-step sequence_log_probs (B, L), and decoder layer `layer`'s inputs per prompt: (T_i, H) for its tokens
    after the prefix, (N, H) for its trie nodes (the prefix's own are SharedPrefix.layer_input)."""
    with captured_inputs(decoder_layers(model)[layer]) as captured:
        sums = sequence_log_probs(model, ids, trie, pad_id, prefix, one_pass=False)
    prompt_hidden, trie_hidden = captured  # (B, T, H), (B, N, H): the prompt forward, then the trie step
    skip = len(prefix.token_ids) if prefix is not None else 0
    return sums, split_rows(prompt_hidden, trie_hidden, [len(x) - skip for x in ids])


def _two_step(model, ids, trie, pad_id, prefix):
    """Prompt forward of the decoder (cache on), then the trie as a continuation over the cache; the last prompt
    position's and the nodes' final hidden states then go through lm_head in ONE matmul, (B*(1+N), H) @ (H, V).
    (The causal LM's own head on the last position, a strided (B, 1, H) slice, ran as B matrix-vector products
    that read the 49,152 x 576 head B times: 28 ms of a 760 ms batch of 8 on 2 cores, docs/judge.md.)"""
    device = next(model.parameters()).device
    decoder = base_causal_lm(model).model
    cache = None
    prefix_length = 0
    if prefix is not None:
        prefix_length = len(prefix.token_ids)
        if any(tuple(x[:prefix_length]) != prefix.token_ids or len(x) <= prefix_length for x in ids):
            raise ValueError("a prompt does not start with the cached prefix")
        ids = [x[prefix_length:] for x in ids]
        cache = prefix.expand(len(ids), model.config)
    batch = pad_left(ids, pad_id, device)
    input_ids, attention_mask = batch["input_ids"], batch["attention_mask"]  # (B, L)
    if prefix_length:
        # [prefix][padding][own tokens]: the 2-D mask hides the padding in the middle.
        attention_mask = torch.cat([attention_mask.new_ones(len(ids), prefix_length), attention_mask], dim=1)
    position_ids = token_positions(attention_mask)[:, prefix_length:]  # (B, L)
    out = decoder(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
                  use_cache=True, **{cache_keyword(decoder): cache})
    cache = returned_cache(out)
    if cache is None:
        raise RuntimeError("the model returned no KV cache (gradient checkpointing in training mode?); "
                           "use one_pass=True")
    last = out.last_hidden_state[:, -1:]  # (B, 1, H)
    # The trie nodes over the cache: they see every real key of it (prefix included) and their ancestors.
    n = len(trie.node_tokens)
    tokens = torch.tensor(trie.node_tokens, device=device).expand(len(ids), n)  # (B, N)
    mask = additive_mask(tree_attention(attention_mask.bool(), trie, prompt_rows=False)[:, None],
                         next(model.parameters()).dtype)  # (B, 1, N, P+L+N)
    out = decoder(input_ids=tokens, attention_mask=mask, position_ids=node_positions(position_ids[:, -1:], trie),
                  use_cache=True, **{cache_keyword(decoder): cache})
    hidden = torch.cat([last, out.last_hidden_state], dim=1)  # (B, 1+N, H), contiguous
    logp = head_log_probs(model, hidden)  # (B, 1+N, V)
    return logp[:, 0], logp[:, 1:]  # (B, V), (B, N, V)


def _one_pass(model, ids, trie, pad_id):
    """[prompt][trie nodes] in one forward: causal over the prompt, tree mask over the nodes."""
    device = next(model.parameters()).device
    batch = pad_left(ids, pad_id, device)
    input_ids, attention_mask = batch["input_ids"], batch["attention_mask"]  # (B, L)
    n = len(trie.node_tokens)
    position_ids = token_positions(attention_mask)  # (B, L)
    node_tokens = torch.tensor(trie.node_tokens, device=device).expand(len(ids), n)
    mask = additive_mask(tree_attention(attention_mask.bool(), trie, prompt_rows=True)[:, None],
                         next(model.parameters()).dtype)  # (B, 1, L+N, L+N)
    decoder = base_causal_lm(model).model
    out = decoder(input_ids=torch.cat([input_ids, node_tokens], dim=1), attention_mask=mask,
                  position_ids=torch.cat([position_ids, node_positions(position_ids[:, -1:], trie)], dim=1),
                  use_cache=False)
    logp = head_log_probs(model, out.last_hidden_state[:, -(n + 1):].contiguous())  # (B, N+1, V): last prompt, nodes
    return logp[:, 0], logp[:, 1:]


# Layers K.. on given inputs ----------------------------------------------------------------------------------------
@contextlib.contextmanager
def captured_inputs(layer):
    """Collect the hidden-state input of every forward call of `layer` (detached) while the context is open."""
    captured: list[torch.Tensor] = []
    handle = layer.register_forward_pre_hook(
        lambda module, args, kwargs: captured.append((args[0] if args else kwargs["hidden_states"]).detach()),
        with_kwargs=True)
    try:
        yield captured
    finally:
        handle.remove()


def split_rows(prompt_hidden: torch.Tensor, trie_hidden: torch.Tensor, own_lengths: list[int]) -> Rows:
    """Per row of a left-padded two-step pass, (B, T, H) and (B, N, H): its own tokens' inputs (T_i, H), the last
    `own_lengths[row]` positions, and its trie tokens' inputs (N, H); both cloned off the batch tensors."""
    return [(prompt_hidden[row, prompt_hidden.shape[1] - n:].clone(), trie_hidden[row].clone())
            for row, n in enumerate(own_lengths)]


def upper_sequence_log_probs(model, layer: int, rows: Rows, trie: LabelTrie,
                             prefix_input: torch.Tensor | None = None) -> torch.Tensor:
    """(B, L) log p(s_k | x) from decoder layers `layer`.. + final norm + lm_head on given layer inputs; differentiable
    under grad. `prefix_input` (P, H): the shared prefix's inputs of that layer, when `rows` start after it."""
    hidden = upper_final_hidden(model, layer, rows, trie, prefix_input)  # (B, 1+N, H)
    logp = head_log_probs(model, hidden)  # (B, 1+N, V)
    return label_sums(logp[:, 0], logp[:, 1:], trie)


def upper_final_hidden(model, layer: int, rows: Rows, trie: LabelTrie,
                       prefix_input: torch.Tensor | None = None) -> torch.Tensor:
    """(B, 1+N, H) final (normed) hidden states at the last prompt token and at the trie nodes, from decoder layers
    `layer`.. on given layer inputs; differentiable under grad. The last prompt token attends to the prompt only, so
    its state is the one a plain forward of the prompt ends with (the reward head of train/bradley_terry.py reads it).

    Row layout: [shared prefix (as keys/values only)][left padding][own prompt tokens][trie nodes].
    """
    causal_lm = base_causal_lm(model)
    decoder = causal_lm.model
    device = next(model.parameters()).device
    lengths = torch.tensor([own.shape[0] for own, _ in rows], device=device)
    batch, longest, n_nodes = len(rows), int(lengths.max()), len(trie.node_tokens)
    width, dtype = rows[0][0].shape[1], rows[0][0].dtype
    hidden = torch.zeros(batch, longest + n_nodes, width, dtype=dtype, device=device)  # (B, T+N, H)
    for row, (own, nodes) in enumerate(rows):
        hidden[row, longest - own.shape[0]:longest] = own
        hidden[row, longest:] = nodes
    real = torch.arange(longest, device=device)[None] >= (longest - lengths)[:, None]  # (B, T): left padding
    n_prefix = 0 if prefix_input is None else prefix_input.shape[0]
    prompt_positions = token_positions(real, n_prefix)  # (B, T)
    positions = torch.cat([prompt_positions, node_positions(prompt_positions[:, -1:], trie)], dim=1)  # (B, T+N)
    mask = additive_mask(tree_attention(real, trie, prompt_rows=True, n_prefix=n_prefix)[:, None], dtype)
    layers = decoder.layers[layer:]
    cache_kwargs = {}
    if n_prefix:
        # The prefix through the layers once, with grad when enabled; the rows then attend to its keys/values.
        recorder = PrefixKV(record=True)
        argument = cache_keyword(layers[0])
        prefix_hidden = prefix_input.to(device)[None]  # (1, P, H)
        prefix_positions = torch.arange(n_prefix, device=device)[None]  # (1, P)
        causal = torch.ones(n_prefix, n_prefix, dtype=torch.bool, device=device).tril()
        prefix_mask = additive_mask(causal[None, None], dtype)  # (1, 1, P, P)
        prefix_rotary = decoder.rotary_emb(prefix_hidden, position_ids=prefix_positions)
        for decoder_layer in layers:
            prefix_hidden = decoder_layer(prefix_hidden, attention_mask=prefix_mask, position_ids=prefix_positions,
                                          position_embeddings=prefix_rotary, **{argument: recorder})
        recorder.record = False  # from now on it prepends what it recorded
        cache_kwargs = {argument: recorder}
    rotary = decoder.rotary_emb(hidden, position_ids=positions)
    for decoder_layer in layers:
        hidden = decoder_layer(hidden, attention_mask=mask, position_ids=positions, position_embeddings=rotary,
                               **cache_kwargs)
    keep = torch.cat([torch.tensor([longest - 1]), torch.arange(longest, longest + n_nodes)]).to(device)
    return decoder.norm(hidden[:, keep])  # (B, 1+N, H)


def last_hidden(model, ids: list[list[int]], pad_id: int) -> torch.Tensor:
    """(B, H) final (normed) hidden state at each prompt's last token, from a plain forward of the whole decoder
    (left padding, so the last position is real); differentiable under grad."""
    device = next(model.parameters()).device
    batch = pad_left(ids, pad_id, device)
    out = base_causal_lm(model).model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                                      position_ids=token_positions(batch["attention_mask"]), use_cache=False)
    return out.last_hidden_state[:, -1]  # (B, H)
