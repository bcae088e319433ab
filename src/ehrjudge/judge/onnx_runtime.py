"""The judge under ONNX Runtime: one exported graph of the merged judge, fp32 or with int8 weights.

The graph is the one-pass forward of judge/forward.py (prompt and label-trie nodes in one sequence, a 4-D additive
mask: causal over the prompt, the tree over the nodes), ending in the log-softmax at the last prompt position and at
the N trie nodes:

    inputs   input_ids (B, T+N) int64, mask (B, 1, T+N, T+N) float32 (0 = attend, dtype min = not),
             position_ids (B, T+N) int64
    output   logp (B, N+1, V) float32: row 0 predicts the first label token, row 1+j the token after trie node j

so that forward.label_sums gives the same log p(s_k | x) as the torch judge. It has no KV cache, so the prompt
prefix that all records share is recomputed per record (the torch path runs it once, forward.SharedPrefix).

int8: onnxruntime.quantization.quantize_dynamic (weights int8 per output channel, activations quantized per batch
at run time, MatMulInteger / DynamicQuantizeMatMul kernels with VNNI/AMX where the CPU has them). Only MatMuls with a
constant weight are quantized; the LM head is kept fp32 (its 49,152 logits feed the label probabilities directly;
with SmolLM2's tied embedding its weight is a transposed Gather table, which quantize_dynamic leaves alone anyway).
Measured against torch fp32 in benchmarks/judge_runtimes.py.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch

from ehrjudge.errors import InputError
from ehrjudge.judge import forward
from ehrjudge.judge.artifact import merged_copy
from ehrjudge.judge.labels import LABELS, LabelScorer
from ehrjudge.judge.scoring import check_context, model_context

INPUT_NAMES = ("input_ids", "mask", "position_ids")
CONTEXT_KEY = "max_position_embeddings"  # graph metadata: the positions the exported model was trained on


class _OnePassLogProbs(torch.nn.Module):
    """The exported function: a plain causal LM on [prompt][trie], log-softmax at the last prompt token + nodes."""

    def __init__(self, model, n_nodes: int):
        super().__init__()
        self.model = model
        self.n_nodes = n_nodes

    def forward(self, input_ids, mask, position_ids):
        out = self.model(input_ids=input_ids, attention_mask=mask, position_ids=position_ids, use_cache=False,
                         logits_to_keep=self.n_nodes + 1)
        return torch.log_softmax(out.logits.float(), dim=-1)


def one_pass_inputs(ids: list[list[int]], trie: forward.LabelTrie, pad_id: int) -> tuple[torch.Tensor, ...]:
    """(input_ids, mask, position_ids) of the one-pass layout for left-padded prompts `ids`."""
    batch = forward.pad_left(ids, pad_id, "cpu")
    input_ids, attention_mask = batch["input_ids"], batch["attention_mask"]
    n = len(trie.node_tokens)
    positions = forward.token_positions(attention_mask)
    nodes = torch.tensor(trie.node_tokens).expand(len(ids), n)
    mask = forward.additive_mask(forward.tree_attention(attention_mask.bool(), trie, prompt_rows=True)[:, None],
                                 torch.float32)
    return (torch.cat([input_ids, nodes], dim=1), mask,
            torch.cat([positions, forward.node_positions(positions[:, -1:], trie)], dim=1))


def export_onnx(model, tokenizer, path: str | Path, labels: tuple = LABELS) -> Path:
    """Write the judge `model` (a PEFT adapter is merged into a copy first; fp32) as an ONNX graph at `path`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    plain = merged_copy(model)
    scorer = LabelScorer(tokenizer, labels)
    example = one_pass_inputs([[scorer.pad_id + 1] * 9, [scorer.pad_id + 1] * 6], scorer.trie, scorer.pad_id)
    batch, length = torch.export.Dim("batch"), torch.export.Dim("length")
    shapes = {"input_ids": {0: batch, 1: length}, "mask": {0: batch, 2: length, 3: length},
              "position_ids": {0: batch, 1: length}}
    with torch.no_grad():
        program = torch.onnx.export(_OnePassLogProbs(plain, len(scorer.trie.node_tokens)), example, dynamo=True,
                                    dynamic_shapes=shapes, input_names=list(INPUT_NAMES), output_names=["logp"],
                                    verbose=False)
    context = model_context(plain)
    if context is not None:  # OnnxJudge refuses prompts past it, as the torch judge does (scoring.check_context)
        program.model.metadata_props[CONTEXT_KEY] = str(context)
    program.save(str(path), external_data=False)
    return path


def quantize_int8(source: str | Path, target: str | Path, keep_lm_head: bool = True) -> Path:
    """`source` with dynamic int8 weights (per channel) at `target`; the last MatMul (the LM head) stays fp32 when
    `keep_lm_head`."""
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    graph = onnx.load(str(source), load_external_data=False).graph
    matmuls = [node.name for node in graph.node if node.op_type in ("MatMul", "Gemm")]
    quantize_dynamic(str(source), str(target), weight_type=QuantType.QInt8, per_channel=True,
                     nodes_to_exclude=matmuls[-1:] if keep_lm_head and matmuls else [])
    return Path(target)


class OnnxJudge:
    """An exported judge graph under onnxruntime's CPU provider: label log-probs of prompts."""

    def __init__(self, path: str | Path, tokenizer, threads: int = 2, labels: tuple = LABELS):
        import onnxruntime

        if not Path(path).exists():
            raise InputError("no ONNX judge graph here (export it with ehrjudge.judge.onnx_runtime.export_onnx)",
                             file=path)
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        self.session = onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        self.scorer = LabelScorer(tokenizer, labels)
        saved = self.session.get_modelmeta().custom_metadata_map.get(CONTEXT_KEY)
        self.context = int(saved) if saved else None  # None: a graph exported without it, lengths unchecked

    def sequence_log_probs(self, ids: list[list[int]]) -> torch.Tensor:
        """(B, L) log p(s_k | x) of the prompts' token ids, as forward.sequence_log_probs."""
        feeds = {name: tensor.numpy() for name, tensor in
                 zip(INPUT_NAMES, one_pass_inputs(ids, self.scorer.trie, self.scorer.pad_id))}
        logp = torch.from_numpy(self.session.run(None, feeds)[0])  # (B, N+1, V)
        return forward.label_sums(logp[:, 0], logp[:, 1:], self.scorer.trie)

    def judge_prompts(self, prompts: list[str], batch_size: int = 8) -> tuple[np.ndarray, float]:
        """((N, L) renormalized label log-probs, seconds), in the length-sorted batches of judge.scoring."""
        ids = self.scorer.tokenize(prompts)
        check_context([len(x) for x in ids], self.context, self.scorer)
        order = np.argsort([len(x) for x in ids], kind="stable")
        out = np.empty((len(prompts), len(self.scorer.labels)), dtype=np.float64)
        start = time.perf_counter()
        for begin in range(0, len(order), batch_size):
            index = order[begin:begin + batch_size]
            sums = self.sequence_log_probs([ids[i] for i in index])
            out[index] = torch.log_softmax(sums, dim=-1).double().numpy()
        return out, time.perf_counter() - start
