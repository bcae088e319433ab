"""Judge inference on a table of records: prompts, exact label distributions, summary scores per record."""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import time

import numpy as np
import pandas as pd
import torch
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from ehrjudge.cohort.reference_stats import ReferenceStats
from ehrjudge.cohort.schema import Schema
from ehrjudge.cohort.text import record_to_text
from ehrjudge.config import option, save_config
from ehrjudge.errors import InputError
from ehrjudge.judge.labels import LABELS, LabelScorer
from ehrjudge.judge.layer_inputs import (LayerCapture, LayerInputs, base_causal_lm, captured_inputs,
                                        lower_weights_sha, prompt_key, split_rows)
from ehrjudge.judge.prompt import PromptConfig, build_prompt, resolved_chat_template

log = logging.getLogger(__name__)
PROBABILITY_COLUMNS = [f"p_{k}" for k in LABELS]


@dataclasses.dataclass
class JudgeConfig:
    """Which judge runs, where, and with which prompt."""

    model: str | None = option(None, "local HF checkpoint dir, hub id, or ehrjudge checkpoint; None = SmolLM2-135M")
    adapter: str | None = option(None, "LoRA adapter directory (peft) applied on top of the model")
    device: str = option("auto", "auto (cuda if available, else cpu), cpu, cuda, cuda:1, ...")
    dtype: str = option("auto", "auto (bf16 on cuda, fp32 on cpu), float32, bfloat16, float16")
    batch_size: int = option(8, "records per forward pass")
    reuse_prefix: bool = option(True, "compute the prompt prefix shared by all records (system + instruction) once")
    prompt: PromptConfig = option(PromptConfig(), "prompt layout")


def save_judge_config(config: JudgeConfig, tokenizer, path) -> None:
    """Save the resolved config with the chat template actually used written out in full."""
    prompt = dataclasses.replace(config.prompt, chat_template=resolved_chat_template(tokenizer, config.prompt))
    save_config(dataclasses.replace(config, prompt=prompt), path)


def token_counter(tokenizer):
    return lambda text: len(tokenizer.encode(text, add_special_tokens=False))


def record_texts(records: pd.DataFrame, schema: Schema, tokenizer, config: PromptConfig,
                 reference: ReferenceStats | None = None) -> list[str]:
    """The record table text of every row (truncated to config.max_record_tokens).

    `reference` (the reference cohort's per-feature statistics) is needed by record_format "deviations" only.
    """
    count = token_counter(tokenizer)
    ids = records["record_id"].tolist() if "record_id" in records.columns else [None] * len(records)
    rows = records[schema.names].to_dict(orient="records")
    return [record_to_text(row, schema, fmt=config.record_format, max_tokens=config.max_record_tokens,
                           count_tokens=count, record_id=record_id, reference=reference, top=config.deviation_items)
            for row, record_id in zip(rows, ids)]


def record_prompts(records: pd.DataFrame, schema: Schema, tokenizer, config: PromptConfig | None = None,
                   reference: ReferenceStats | None = None) -> list[str]:
    """Full judge prompts (chat template applied) for every row of a records table."""
    config = config or PromptConfig()
    return [build_prompt(text, tokenizer, config)
            for text in record_texts(records, schema, tokenizer, config, reference)]


def summarize_distribution(log_probs: np.ndarray) -> pd.DataFrame:
    """judge_score = argmax_k p_k, expected_score = sum_k k p_k, entropy = -sum_k p_k ln p_k (nats, 0..ln 10)."""
    probs = np.exp(log_probs)  # (N, 10)
    labels = np.asarray(LABELS, dtype=float)
    return pd.DataFrame({
        "judge_score": labels[probs.argmax(axis=1)].astype(int),
        "expected_score": probs @ labels,
        "entropy": -(probs * log_probs).sum(axis=1),
        **{name: probs[:, i] for i, name in enumerate(PROBABILITY_COLUMNS)},
    })


def progress_batches(order: np.ndarray, batch_size: int, description: str):
    """Yield `order` in consecutive slices of `batch_size` under a progress bar advanced after each slice."""
    columns = [TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn()]
    with Progress(*columns, transient=True) as progress:
        task = progress.add_task(description, total=len(order))
        for begin in range(0, len(order), batch_size):
            index = order[begin:begin + batch_size]
            yield index
            progress.advance(task, len(index))


def model_context(model) -> int | None:
    """The positions the model was trained on (max_position_embeddings), None when its config does not say."""
    return getattr(model.config, "max_position_embeddings", None)


def check_context(lengths: list[int], context: int | None, scorer: LabelScorer) -> None:
    """Refuse a prompt whose answer positions would run past the model's context (RoPE positions it never saw,
    attention memory quadratic in length): named by its row, with the setting that bounds it."""
    if context is None or not lengths:
        return
    answer = max(scorer.trie.node_depths)  # the label-trie tokens fed after the prompt (positions L .. L+d-1)
    row = int(np.argmax(lengths))
    if lengths[row] + answer > context:
        raise InputError(f"the judge prompt is {lengths[row]} tokens, over the model's context of {context} "
                         f"({sum(n + answer > context for n in lengths)} of {len(lengths)} prompts are); set "
                         "--prompt.max-record-tokens (the record text's token budget) or a shorter "
                         "--prompt.record-format", row=row)


def judge_prompts(model, tokenizer, prompts: list[str], batch_size: int = 8, reuse_prefix: bool = True,
                  description: str = "judging", capture: LayerCapture | None = None) -> np.ndarray:
    """(N, 10) label log-probabilities, batches formed from length-sorted prompts to limit padding.

    `capture`: also keep the inputs of decoder layer `capture.layer` in `capture.result` (judge.layer_inputs), for a
    later judge that differs from this model only in the layers above.
    """
    scorer = LabelScorer(tokenizer)
    ids = scorer.tokenize(prompts)
    check_context([len(x) for x in ids], model_context(model), scorer)
    layers = base_causal_lm(model).model.layers
    kept = None if capture is None else capture.resolved(len(layers))
    layer = None if kept is None else layers[kept]

    def watch():
        return captured_inputs(layer) if layer is not None else contextlib.nullcontext([])

    prefix, prefix_hidden = None, None
    if reuse_prefix and len(prompts) > 1:
        with watch() as seen:
            prefix = scorer.shared_prefix(model, prompts)
        prefix_hidden = seen[0][0].cpu().clone() if layer is not None else None  # (P, H)
    skip = len(prefix.token_ids) if prefix is not None else 0
    lengths = [len(x) for x in ids]
    order = np.argsort(lengths, kind="stable")
    out = np.empty((len(prompts), len(LABELS)), dtype=np.float64)
    own: list[torch.Tensor | None] = [None] * len(prompts)
    trie: list[torch.Tensor | None] = [None] * len(prompts)
    start = time.perf_counter()
    with torch.no_grad():
        for index in progress_batches(order, batch_size, description):
            batch = [prompts[i] for i in index]
            with watch() as seen:
                out[index] = scorer.log_probs(model, batch, prefix=prefix).double().cpu().numpy()
            if layer is not None:
                # Scoring without grad is two-step: the prompt forward (B, T, H), then the trie step (B, N, H).
                prompt_hidden, trie_hidden = seen
                rows = split_rows(prompt_hidden.cpu(), trie_hidden.cpu(), [lengths[i] - skip for i in index])
                for i, (own_inputs, trie_inputs) in zip(index, rows):
                    own[i], trie[i] = own_inputs, trie_inputs
    elapsed = time.perf_counter() - start
    log.info("judged %d prompts (mean %.0f tokens) in %.1f s: %.2f records/s", len(prompts), np.mean(lengths),
             elapsed, len(prompts) / max(elapsed, 1e-9))
    if capture is not None:
        capture.result = LayerInputs(kept, lower_weights_sha(model, kept), list(scorer.trie.node_tokens),
                                     [prompt_key(x) for x in ids], own, trie, prefix_hidden)
    return out


def judge_records(model, tokenizer, records_df: pd.DataFrame, schema: Schema, prompt_config: PromptConfig | None = None,
                  batch_size: int = 8, reuse_prefix: bool = True, reference: ReferenceStats | None = None,
                  capture: LayerCapture | None = None) -> pd.DataFrame:
    """record_id, judge_score, expected_score, entropy, p_1..p_10 for every record, in input order.

    `reference`: the reference cohort's statistics, needed by the "deviations" record format.
    `capture`: keep one decoder layer's inputs (see judge_prompts).
    """
    if "record_id" not in records_df.columns:
        raise InputError("records table has no record_id column", column="record_id")
    if len(records_df) == 0:
        raise InputError("no records to judge")
    prompts = record_prompts(records_df, schema, tokenizer, prompt_config, reference)
    summary = summarize_distribution(judge_prompts(model, tokenizer, prompts, batch_size=batch_size,
                                                  reuse_prefix=reuse_prefix, capture=capture))
    summary.insert(0, "record_id", records_df["record_id"].to_numpy())
    return summary


def matrix_scorer(model, tokenizer, schema: Schema, prompt_config: PromptConfig, reference: ReferenceStats,
                  batch_size: int = 8, calibration=None):
    """f(records (m, p) in schema order) -> the judge's score per record: its calibrated expected score when a
    calibration is given, else the expected score (for probes and other callers holding bare vectors)."""

    def score(matrix: np.ndarray) -> np.ndarray:
        frame = pd.DataFrame(matrix, columns=schema.names)
        frame.insert(0, "record_id", [f"r{i}" for i in range(len(frame))])
        expected = judge_records(model, tokenizer, frame, schema, prompt_config, batch_size,
                                 reference=reference)["expected_score"].to_numpy()
        return calibration(expected) if calibration is not None else expected

    return score
