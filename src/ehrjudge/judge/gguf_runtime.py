"""The judge under llama.cpp: a GGUF export of the merged judge (f32, f16 or q8_0 weights), exact label
probabilities from llama.cpp's own CPU kernels.

Install (optional; llama-cpp-python has no binary wheel for this platform and compiles llama.cpp, ~15-25 min):

    pip install 'ehrjudge[gguf]'   # or: CMAKE_ARGS="-DGGML_NATIVE=ON" pip install llama-cpp-python gguf sentencepiece

Export needs llama.cpp's HF -> GGUF converter, which is not in the wheel but in the llama-cpp-python sdist
(vendor/llama.cpp: convert_hf_to_gguf.py, conversion/, gguf-py/). fetch_converter() downloads the sdist of the
installed llama-cpp-python version and unpacks those into $EHRJUDGE_CACHE/llama.cpp (default
~/.cache/ehrjudge/llama.cpp); $EHRJUDGE_GGUF_CONVERTER or `converter=` point to another copy of the script.

The label probabilities are those of judge/forward.py, computed the same way. For prompt x and label k with answer
tokens s_k = (t_1, ..., t_m, <end>):

    log p(s_k | x) = sum_j log p(t_j | x, t_<j),    log q_k = log p(s_k | x) - logsumexp_k' log p(s_k' | x)

The label trie (forward.LabelTrie) becomes llama.cpp sequences: one KV-cache sequence per label, the prompt in
all of them, each trie node in the sequences of the labels whose answer passes through it, at position
(last prompt position) + depth. llama.cpp's attention lets a token see the cached tokens that share a sequence
with it and sit at a lower or equal position, which is exactly the tree mask of forward.tree_attention: node "0" of
"10" (sequence of label 10) sees the prompt and node "1" (sequences of labels 1 and 10), never node "2". One
llama_decode per prompt then returns the logits at the last prompt token and at every node. This needs the unified
KV cache (kv_unified: tokens in several sequences at once).

The prompt prefix common to all prompts (system + instruction) is decoded once into every sequence and kept;
after each prompt everything past it is dropped (llama_memory_seq_rm). The token ids are the HF tokenizer's
(LabelScorer.tokenize), never llama.cpp's tokenization, so both runtimes read identical tokens.

The KV cache is kept in f32 (llama.cpp's default is f16) and flash attention is off by default (llama.cpp's "auto"
turns it on for the CPU, where it rounds through f16: measured on the tiny test judge, max |delta logit| 2.5e-2 with
it, 1e-5 without), so that an f32 export reproduces the torch judge to float rounding. With q8_0 weights the matmuls
quantize their activations to 8 bits per block of 32 as well.

llama.cpp's extra CPU weight buffers (use_extra_bufts: weights repacked for the AMX int8 / repack kernels) are off by
default: with them, llama-cpp-python 0.3.36 built with GGML_NATIVE on this Xeon (AMX_INT8, AVX512_VNNI) crashed with
a segmentation fault in the first llama_decode of every Q8_0 file tried (the tiny test judge and SmolLM2-135M), also
through the high-level llama_cpp.Llama; without them it runs. `extra_buffers=True` turns them back on.

Measured (benchmarks/judge_runtimes.py --records 24, the trained judge of runs/default, against torch fp32): f32 max
|delta expected score| 1.2e-5 (argmax 1.000), f16 0.0071 (1.000), q8_0 0.210, mean 0.050 (0.875, outside the issue's
limits). Speed was not measured on a quiet machine. Under load (load average 4-5 on 2 cores) threads=1 ran 3-4x
faster than threads=2 (llama.cpp's threads spin at every op's barrier and stall when one is descheduled).
"""

from __future__ import annotations

import ctypes
import logging
import os
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from ehrjudge.errors import InputError
from ehrjudge.judge import forward
from ehrjudge.judge.artifact import merged_copy
from ehrjudge.judge.labels import LABELS, LabelScorer
from ehrjudge.paths import cache_dir

log = logging.getLogger(__name__)
OUTTYPES = ("f32", "f16", "bf16", "q8_0")
CONVERTER = "convert_hf_to_gguf.py"
CONVERTER_ENV = "EHRJUDGE_GGUF_CONVERTER"
GGML_TYPE_F32 = 0  # ggml_type of the KV cache


def converter_path(converter: str | Path | None = None) -> Path:
    """llama.cpp's convert_hf_to_gguf.py: `converter`, else $EHRJUDGE_GGUF_CONVERTER, else fetch_converter()'s copy."""
    path = Path(converter or os.environ.get(CONVERTER_ENV) or cache_dir("llama.cpp") / CONVERTER)
    if not path.is_file():
        raise InputError(f"llama.cpp's HF -> GGUF converter is missing; run "
                         f"ehrjudge.judge.gguf_runtime.fetch_converter() (unpacks it from the llama-cpp-python sdist) "
                         f"or set ${CONVERTER_ENV} to a convert_hf_to_gguf.py of llama.cpp", file=path)
    return path


def fetch_converter(target: str | Path | None = None, version: str | None = None) -> Path:
    """Unpack convert_hf_to_gguf.py, conversion/ and gguf-py/ from the llama-cpp-python sdist (`version`, default the
    installed one, so the converter matches the runtime) into `target` (default $EHRJUDGE_CACHE/llama.cpp)."""
    if version is None:
        import llama_cpp

        version = llama_cpp.__version__
    target = Path(target) if target is not None else cache_dir("llama.cpp")
    with tempfile.TemporaryDirectory() as tmp:
        done = subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:",
                               f"llama-cpp-python=={version}", "-d", tmp], capture_output=True, text=True)
        found = sorted(Path(tmp).glob("llama_cpp_python-*.tar.gz"))
        if done.returncode != 0 or not found:
            tail = "\n".join((done.stderr or done.stdout).strip().splitlines()[-10:])
            raise RuntimeError(f"pip download of the llama-cpp-python=={version} sdist failed:\n{tail}")
        sdist = found[0]
        root = f"{sdist.name.removesuffix('.tar.gz')}/vendor/llama.cpp/"
        wanted = (CONVERTER, "LICENSE", "conversion/", "gguf-py/")
        with tarfile.open(sdist) as archive:
            members = []
            for member in archive.getmembers():
                if member.name.startswith(root) and member.name[len(root):].startswith(wanted):
                    member.name = member.name[len(root):]
                    members.append(member)
            archive.extractall(target, members=members, filter="data")
    return converter_path(target / CONVERTER)


def export_gguf(model, tokenizer, path: str | Path, outtype: str = "q8_0", converter: str | Path | None = None,
                name: str = "ehrjudge-judge") -> Path:
    """Write the judge `model` (a PEFT adapter is merged into a copy first) as a GGUF file at `path` with `outtype`
    weights (f32, f16, bf16 or q8_0), through llama.cpp's convert_hf_to_gguf.py on a temporary HF checkpoint."""
    if outtype not in OUTTYPES:
        raise InputError(f"GGUF outtype {outtype!r} is not one of {OUTTYPES}")
    script = converter_path(converter)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    plain = merged_copy(model)
    with tempfile.TemporaryDirectory() as tmp:
        plain.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        done = subprocess.run([sys.executable, str(script), tmp, "--outfile", str(path), "--outtype", outtype,
                               "--model-name", name],
                              capture_output=True, text=True)
    if done.returncode != 0 or not path.is_file():
        tail = "\n".join((done.stderr or done.stdout).strip().splitlines()[-15:])
        raise RuntimeError(f"{script} failed (exit {done.returncode}) writing {path}:\n{tail}")
    return path


_LOG_CALLBACK = []  # the ctypes callback, kept alive for as long as llama.cpp may call it


def _route_llama_log(llama_cpp) -> None:
    """llama.cpp's log lines (process-wide) to this module's logger at debug level, instead of stderr."""
    if not _LOG_CALLBACK:
        def write(level, text, user_data):
            log.debug("%s", text.decode(errors="replace").rstrip())

        _LOG_CALLBACK.append(llama_cpp.llama_log_callback(write))
    llama_cpp.llama_log_set(_LOG_CALLBACK[0], ctypes.c_void_p(0))


class GgufJudge:
    """A GGUF judge under llama.cpp (CPU): label log-probs of prompts, same contract as onnx_runtime.OnnxJudge."""

    def __init__(self, path: str | Path, tokenizer, threads: int = 2, labels: tuple = LABELS,
                 n_ctx: int = 4096, share_prefix: bool = True, flash_attention: bool = False,
                 extra_buffers: bool = False):
        path = Path(path)
        if not path.is_file():
            raise InputError("no GGUF judge here (export it with ehrjudge.judge.gguf_runtime.export_gguf)", file=path)
        import llama_cpp  # the optional extra ehrjudge[gguf]

        self.lib = llama_cpp
        self.scorer = LabelScorer(tokenizer, labels)
        self.share_prefix = share_prefix
        self.n_ctx = n_ctx
        trie = self.scorer.trie
        # Sequence of each label = its index; a node belongs to the labels whose answer path passes through it.
        self.node_sequences = [[k for k, steps in enumerate(trie.steps) if any(node == j for node, _ in steps)]
                               for j in range(len(trie.node_tokens))]
        self.n_sequences = len(trie.steps)
        _route_llama_log(llama_cpp)
        llama_cpp.llama_backend_init()
        model_params = llama_cpp.llama_model_default_params()
        model_params.use_extra_bufts = extra_buffers
        self.model = llama_cpp.llama_model_load_from_file(str(path).encode(), model_params)
        if not self.model:
            raise InputError("llama.cpp could not load this GGUF file", file=path)
        self.n_vocab = llama_cpp.llama_vocab_n_tokens(llama_cpp.llama_model_get_vocab(self.model))
        params = llama_cpp.llama_context_default_params()
        params.n_ctx = params.n_batch = n_ctx
        params.n_ubatch = min(n_ctx, 512)
        params.n_seq_max = self.n_sequences
        params.kv_unified = True  # tokens in several sequences at once (the prompt, shared trie nodes)
        params.type_k = params.type_v = GGML_TYPE_F32
        params.flash_attn_type = (llama_cpp.LLAMA_FLASH_ATTN_TYPE_ENABLED if flash_attention
                                  else llama_cpp.LLAMA_FLASH_ATTN_TYPE_DISABLED)
        params.n_threads = params.n_threads_batch = threads
        params.embeddings = False
        self.context = llama_cpp.llama_init_from_model(self.model, params)
        if not self.context:
            raise RuntimeError(f"llama.cpp could not create a context (n_ctx={n_ctx}) for {path}")
        self.memory = llama_cpp.llama_get_memory(self.context)
        self.batch = llama_cpp.llama_batch_init(n_ctx, 0, self.n_sequences)
        self.prefix: tuple[int, ...] = ()

    def close(self) -> None:
        """Free the batch, context and model (also done when the object is collected)."""
        if getattr(self, "context", None):
            self.lib.llama_batch_free(self.batch)
            self.lib.llama_free(self.context)
            self.context = None
        if getattr(self, "model", None):
            self.lib.llama_model_free(self.model)
            self.model = None

    def __del__(self):
        self.close()

    def _decode(self, tokens: list[int], positions: list[int], sequences: list[list[int]], outputs: list[bool]):
        """One llama_decode of the given tokens; raises on any failure (a full KV cache included)."""
        if len(tokens) > self.n_ctx:
            raise InputError(f"{len(tokens)} tokens to decode at once, more than n_ctx={self.n_ctx} of the GgufJudge")
        batch = self.batch
        batch.n_tokens = len(tokens)
        for i, (token, position, seqs, output) in enumerate(zip(tokens, positions, sequences, outputs)):
            batch.token[i], batch.pos[i], batch.n_seq_id[i], batch.logits[i] = token, position, len(seqs), output
            for s, seq in enumerate(seqs):
                batch.seq_id[i][s] = seq
        status = self.lib.llama_decode(self.context, batch)
        if status != 0:
            raise RuntimeError(f"llama_decode failed with status {status} ({len(tokens)} tokens, n_ctx={self.n_ctx})")

    def _logits(self, index: int) -> np.ndarray:
        """(V,) float32 logits of batch token `index` of the last decode (a copy)."""
        pointer = self.lib.llama_get_logits_ith(self.context, index)
        return np.ctypeslib.as_array(pointer, shape=(self.n_vocab,)).copy()

    def _set_prefix(self, prefix: tuple[int, ...]) -> None:
        """The KV cache holds exactly `prefix` in every label sequence (decoded only when it changed)."""
        if prefix == self.prefix:
            return
        self.lib.llama_memory_clear(self.memory, True)
        self.prefix = ()
        if prefix:
            every = list(range(self.n_sequences))
            self._decode(list(prefix), list(range(len(prefix))), [every] * len(prefix), [False] * len(prefix))
        self.prefix = prefix

    def sequence_log_probs_one(self, ids: list[int]) -> torch.Tensor:
        """(L,) log p(s_k | x) of one prompt's token ids (which start with the cached prefix)."""
        trie = self.scorer.trie
        start = len(self.prefix)
        own = ids[start:]
        every = list(range(self.n_sequences))
        last = len(ids) - 1
        tokens = own + list(trie.node_tokens)
        positions = list(range(start, len(ids))) + [last + depth for depth in trie.node_depths]
        sequences = [every] * len(own) + self.node_sequences
        outputs = [False] * (len(own) - 1) + [True] * (1 + len(trie.node_tokens))
        self.lib.llama_memory_seq_rm(self.memory, -1, start, -1)  # the previous prompt's own tokens and nodes
        self._decode(tokens, positions, sequences, outputs)
        first = len(own) - 1
        logits = torch.from_numpy(np.stack([self._logits(first + j) for j in range(1 + len(trie.node_tokens))]))
        logp = torch.log_softmax(logits.double(), dim=-1)  # (N+1, V): last prompt token, then the nodes
        return forward.label_sums(logp[None, 0], logp[None, 1:], trie)[0]

    def judge_prompts(self, prompts: list[str], batch_size: int = 8) -> tuple[np.ndarray, float]:
        """((N, L) renormalized label log-probs, seconds), in the input order.

        One llama_decode per prompt: several prompts in one unified KV cache would make every token's attention run
        over the cells of all of them (masked), a cost growing with the square of the batch, so this runtime does not
        batch; `batch_size` is accepted for the runtimes' common contract and unused.
        """
        if len(prompts) == 0:
            raise InputError("no prompts to score")
        ids = self.scorer.tokenize(prompts)
        longest = int(np.argmax([len(x) for x in ids]))
        if len(ids[longest]) + len(self.scorer.trie.node_tokens) > self.n_ctx:
            raise InputError(f"prompt of {len(ids[longest])} tokens + {len(self.scorer.trie.node_tokens)} trie nodes "
                             f"does not fit n_ctx={self.n_ctx} of the GgufJudge", row=longest)
        out = np.empty((len(prompts), len(self.scorer.labels)), dtype=np.float64)
        start = time.perf_counter()
        prefix = ids[0][:forward.common_prefix_length(ids)] if self.share_prefix else []
        self._set_prefix(tuple(prefix))
        for i, prompt_ids in enumerate(ids):
            out[i] = torch.log_softmax(self.sequence_log_probs_one(prompt_ids), dim=-1).numpy()
        return out, time.perf_counter() - start
