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
from ehrjudge.cohort.text import FINDINGS_FORMATS, record_to_text
from ehrjudge.config import save_config
from ehrjudge.errors import InputError
from ehrjudge.judge.forward import decoder_layers, upper_sequence_log_probs
from ehrjudge.judge.config import JudgeConfig
from ehrjudge.judge.findings import finding_lines, line_caps
from ehrjudge.judge.labels import LABELS, LabelScorer
from ehrjudge.judge.layer_inputs import LayerCapture, LayerInputs, lower_weights_sha, prompt_key
from ehrjudge.judge.prompt import PromptConfig, build_prompt, resolved_chat_template

log = logging.getLogger(__name__)
PROBABILITY_COLUMNS = [f"p_{k}" for k in LABELS]


def save_judge_config(config: JudgeConfig, tokenizer, path) -> None:
    """Save the resolved config with the chat template actually used written out in full."""
    prompt = dataclasses.replace(config.prompt, chat_template=resolved_chat_template(tokenizer, config.prompt))
    save_config(dataclasses.replace(config, prompt=prompt), path)


def token_counter(tokenizer):
    return lambda text: len(tokenizer.encode(text, add_special_tokens=False))


def record_texts(records: pd.DataFrame, schema: Schema, tokenizer, config: PromptConfig,
                 reference: ReferenceStats | None = None) -> list[str]:
    """The record table text of every row (truncated to config.max_record_tokens).

    `reference` (the reference cohort's statistics) is needed by record_formats "deviations", "findings" and
    "findings_dcr" (which also needs reference.patients) only.
    """
    count = token_counter(tokenizer)
    ids = records["record_id"].tolist() if "record_id" in records.columns else [None] * len(records)
    fmt = config.record_format
    findings = (finding_lines(records, schema, reference, closest=fmt == "findings_dcr", caps=config.show_caps,
                              typicality=config.show_typicality and fmt == "findings_dcr")
                if fmt in FINDINGS_FORMATS else [None] * len(ids))
    rows = records[schema.names].to_dict(orient="records")
    return [record_to_text(row, schema, fmt=config.record_format, max_tokens=config.max_record_tokens,
                           count_tokens=count, record_id=record_id, reference=reference, top=config.deviation_items,
                           findings=lines)
            for row, record_id, lines in zip(rows, ids, findings)]


def record_prompts(records: pd.DataFrame, schema: Schema, tokenizer, config: PromptConfig,
                   reference: ReferenceStats | None = None) -> list[str]:
    """Full judge prompts (chat template applied) for every row of a records table; the prompt is always given (a
    trained judge must read the prompt it was trained with, judge.prompt.saved_prompt)."""
    return [build_prompt(text, tokenizer, config)
            for text in record_texts(records, schema, tokenizer, config, reference)]


def reads_cap_line(config: PromptConfig) -> bool:
    return config.show_caps and config.record_format in FINDINGS_FORMATS


def record_caps(records: pd.DataFrame, schema: Schema, config: PromptConfig,
                reference: ReferenceStats | None) -> np.ndarray | None:
    """(n,) the cap each record's cap line states (10 where none), or None when the prompt shows no cap line."""
    if not reads_cap_line(config):
        return None
    return line_caps(records, schema, reference, closest=config.record_format == "findings_dcr")


def matrix_caps(schema: Schema, config: PromptConfig, reference: ReferenceStats | None):
    """f(records (m, p) in schema order) -> record_caps, for callers holding bare vectors (the probes); None when the
    prompt shows no cap line."""
    if not reads_cap_line(config):
        return None
    return lambda matrix: record_caps(pd.DataFrame(matrix, columns=schema.names), schema, config, reference)


def with_capped_score(summary: pd.DataFrame, caps: np.ndarray | None) -> pd.DataFrame:
    """`summary` (summarize_distribution's) with capped_score = min(expected_score, cap) after expected_score, when
    the judge reads a cap line: the score a reward or gate should use, since a trained judge can answer above the
    cap its own prompt states (judge/findings.py line_caps)."""
    if caps is not None:
        summary.insert(summary.columns.get_loc("expected_score") + 1, "capped_score",
                       np.minimum(summary["expected_score"].to_numpy(), caps))
    return summary


def judge_score(scores: pd.DataFrame, calibration=None) -> np.ndarray:
    """The judge's score of each row of judge_records' output: capped_score where the judge reads a cap line, else
    expected_score; through `calibration` when given (fitted on that same score by the training loop)."""
    score = scores["capped_score" if "capped_score" in scores else "expected_score"].to_numpy()
    return calibration(score) if calibration is not None else score


def with_calibrated_score(scores: pd.DataFrame, calibration) -> pd.DataFrame:
    """`scores` with calibrated_score = calibration(capped_score, or expected_score where the judge reads no cap line)
    after that column, when the judge saved a calibration (judge/calibration.py; the training loop fits it on the
    same score)."""
    if calibration is not None:
        after = "capped_score" if "capped_score" in scores else "expected_score"
        scores.insert(scores.columns.get_loc(after) + 1, "calibrated_score", judge_score(scores, calibration))
    return scores


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
                  description: str = "judging", capture: LayerCapture | None = None,
                  labels: tuple = LABELS) -> np.ndarray:
    """(N, L) log-probabilities of `labels` (the 10 scores by default), batches formed from length-sorted prompts to
    limit padding.

    `capture`: also keep the inputs of decoder layer `capture.layer` in `capture.result` (judge.layer_inputs), for a
    later judge that differs from this model only in the layers above.
    """
    scorer = LabelScorer(tokenizer, labels)
    ids = scorer.tokenize(prompts)
    check_context([len(x) for x in ids], model_context(model), scorer)
    kept = None if capture is None else capture.resolved(len(decoder_layers(model)))
    prefix = scorer.shared_prefix(model, prompts, kept) if reuse_prefix and len(prompts) > 1 else None
    lengths = [len(x) for x in ids]
    order = np.argsort(lengths, kind="stable")
    out = np.empty((len(prompts), len(labels)), dtype=np.float64)
    own: list[torch.Tensor | None] = [None] * len(prompts)
    trie: list[torch.Tensor | None] = [None] * len(prompts)
    start = time.perf_counter()
    with torch.no_grad():
        for index in progress_batches(order, batch_size, description):
            batch = [prompts[i] for i in index]
            if kept is None:
                log_probs = scorer.log_probs(model, batch, prefix=prefix)
            else:
                log_probs, rows = scorer.log_probs_and_inputs(model, batch, kept, prefix)
                for i, (own_inputs, trie_inputs) in zip(index, rows):
                    own[i], trie[i] = own_inputs.cpu(), trie_inputs.cpu()
            out[index] = log_probs.double().cpu().numpy()
    elapsed = time.perf_counter() - start
    log.info("judged %d prompts (mean %.0f tokens) in %.1f s: %.2f records/s", len(prompts), np.mean(lengths),
             elapsed, len(prompts) / max(elapsed, 1e-9))
    if capture is not None:
        prefix_inputs = None if prefix is None else prefix.layer_input.cpu()  # (P, H)
        capture.result = LayerInputs(kept, lower_weights_sha(model, kept), list(scorer.trie.node_tokens),
                                     [prompt_key(x) for x in ids], own, trie, prefix_inputs)
    return out


def judge_from_layer_inputs(model, tokenizer, prompts: list[str], inputs: LayerInputs, batch_size: int = 16,
                            description: str = "judging (upper layers)") -> np.ndarray | None:
    """(N, 10) label log-probs of `model` on `prompts`, running only layers inputs.layer.. on saved inputs.

    None (the reason logged) when the inputs do not fit: other prompts, or other weights below that layer.
    Same numbers as judge_prompts on the whole model, up to float rounding (tests/test_layer_inputs.py).
    """
    scorer = LabelScorer(tokenizer)
    token_ids = scorer.tokenize(prompts)
    why = inputs.mismatch(model, token_ids, scorer.trie.node_tokens)
    if why is not None:
        log.warning("saved layer-%d inputs not used (%s): running the whole model", inputs.layer, why)
        return None
    saved = {key: j for j, key in enumerate(inputs.prompt_keys)}
    rows = [(inputs.own[j], inputs.trie[j]) for j in (saved[prompt_key(ids)] for ids in token_ids)]
    order = np.argsort([len(x) for x in token_ids], kind="stable")
    out = np.empty((len(prompts), len(LABELS)), dtype=np.float64)
    start = time.perf_counter()
    with torch.no_grad():
        for index in progress_batches(order, batch_size, description):
            sums = upper_sequence_log_probs(model, inputs.layer, [rows[i] for i in index], scorer.trie, inputs.prefix)
            out[index] = torch.log_softmax(sums, dim=-1).double().cpu().numpy()
    elapsed = time.perf_counter() - start
    log.info("judged %d prompts on layers %d.. in %.1f s: %.2f records/s", len(prompts), inputs.layer, elapsed,
             len(prompts) / max(elapsed, 1e-9))
    return out


def judge_records(model, tokenizer, records_df: pd.DataFrame, schema: Schema, prompt_config: PromptConfig,
                  batch_size: int = 8, reuse_prefix: bool = True, reference: ReferenceStats | None = None,
                  capture: LayerCapture | None = None) -> pd.DataFrame:
    """record_id, judge_score, expected_score, capped_score (a judge reading the cap line), entropy, p_1..p_10 for
    every record, in input order.

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
    return with_capped_score(summary, record_caps(records_df, schema, prompt_config, reference))


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
