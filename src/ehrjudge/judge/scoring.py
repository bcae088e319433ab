"""Judge inference on a table of records: prompts, exact label distributions, summary scores per record."""

from __future__ import annotations

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


def judge_prompts(model, tokenizer, prompts: list[str], batch_size: int = 8, reuse_prefix: bool = True,
                  description: str = "judging") -> np.ndarray:
    """(N, 10) label log-probabilities, batches formed from length-sorted prompts to limit padding."""
    scorer = LabelScorer(tokenizer)
    prefix = None
    if reuse_prefix and len(prompts) > 1:
        prefix = scorer.shared_prefix(model, prompts)
    lengths = [len(tokenizer.encode(p, add_special_tokens=False)) for p in prompts]
    order = np.argsort(lengths, kind="stable")
    out = np.empty((len(prompts), len(LABELS)), dtype=np.float64)
    start = time.perf_counter()
    columns = [TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn()]
    with Progress(*columns, transient=True) as progress, torch.no_grad():
        task = progress.add_task(description, total=len(prompts))
        for begin in range(0, len(prompts), batch_size):
            index = order[begin:begin + batch_size]
            batch = [prompts[i] for i in index]
            out[index] = scorer.log_probs(model, batch, prefix=prefix).double().cpu().numpy()
            progress.advance(task, len(index))
    elapsed = time.perf_counter() - start
    log.info("judged %d prompts (mean %.0f tokens) in %.1f s: %.2f records/s", len(prompts), np.mean(lengths),
             elapsed, len(prompts) / max(elapsed, 1e-9))
    return out


def judge_records(model, tokenizer, records_df: pd.DataFrame, schema: Schema, prompt_config: PromptConfig | None = None,
                  batch_size: int = 8, reuse_prefix: bool = True, reference: ReferenceStats | None = None
                  ) -> pd.DataFrame:
    """record_id, judge_score, expected_score, entropy, p_1..p_10 for every record, in input order.

    `reference`: the reference cohort's statistics, needed by the "deviations" record format.
    """
    if "record_id" not in records_df.columns:
        raise InputError("records table has no record_id column", column="record_id")
    if len(records_df) == 0:
        raise InputError("no records to judge")
    prompts = record_prompts(records_df, schema, tokenizer, prompt_config, reference)
    summary = summarize_distribution(judge_prompts(model, tokenizer, prompts, batch_size=batch_size,
                                                  reuse_prefix=reuse_prefix))
    summary.insert(0, "record_id", records_df["record_id"].to_numpy())
    return summary
