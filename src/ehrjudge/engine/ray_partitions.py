"""The Ray engine: `ehrjudge score` and `ehrjudge judge` over record partitions, one model or scorer per worker actor.

score: the scorer is fitted once here, put in the object store once, and each ScoreWorker actor holds it (NumPy
       arrays zero-copy from the node's shared memory). Partitions are whole `chunk_size` chunks, the very chunks the
       local scorer cuts, so each record meets GEMMs of the same shape.
judge: each JudgeWorker actor loads the judge once. Pass 1 renders and tokenizes the prompts of record partitions
       (returning each partition's lengths and shared token prefix). Here the local engine's plan is rebuilt from
       them: the prefix common to all prompts, the length-sorted order, batches of `batch_size`. Pass 2 sends runs
       of those batches, with that prefix, to the actors. Same batches, same padding, same prefix: same numbers.
Ray actors and `ActorPool.map` (ordered) rather than Ray Data's map_batches: Ray Data re-blocks rows as it likes,
and a batch's composition changes its padding and so its floats.
"""

from __future__ import annotations

import contextlib
import logging

import numpy as np
import pandas as pd
import ray
from ray.util import ActorPool
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from ehrjudge.engine import EngineConfig

log = logging.getLogger(__name__)

SCORE_CHUNKS_PER_TASK = 1  # scorer chunks (chunk_size records each) per call
PROMPT_RECORDS_PER_TASK = 256  # records rendered to prompts per call
JUDGE_BATCHES_PER_TASK = 4  # judge batches per call: small enough to balance the long prompts at the end


@contextlib.contextmanager
def ray_session(engine: EngineConfig):
    """Ray as the caller set it up, else joined (ray_address, then $RAY_ADDRESS) or started here and shut down."""
    if ray.is_initialized():
        yield
        return
    ray.init(address=engine.ray_address, include_dashboard=False, logging_level=logging.WARNING)
    try:
        yield
    finally:
        ray.shutdown()


def limit_threads(threads: int) -> None:
    """Torch (oneDNN) and the BLAS of this worker process run `threads` threads, as a local run with
    OMP_NUM_THREADS=threads does."""
    import torch
    from threadpoolctl import threadpool_limits

    torch.set_num_threads(threads)
    threadpool_limits(threads)


def worker_count(engine: EngineConfig, tasks: int, gpus: float = 0.0) -> int:
    """engine.workers, or as many as the cluster's CPUs (or GPUs) hold; never more than there are tasks."""
    if engine.workers:
        return max(1, min(engine.workers, tasks))
    resources = ray.cluster_resources()
    fits = int(resources.get("CPU", 1) // engine.cpus_per_worker)
    if gpus:
        fits = min(fits, int(resources.get("GPU", 0) // gpus))
    return max(1, min(fits, tasks))


def ordered_results(pool: ActorPool, method: str, items: list, description: str):
    """pool.map of `method` over `items`, in input order, under a progress bar."""
    columns = [TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn()]
    with Progress(*columns, transient=True) as progress:
        task = progress.add_task(description, total=len(items))
        for result in pool.map(lambda actor, item: getattr(actor, method).remote(item), items):
            progress.advance(task)
            yield result


@ray.remote
class ScoreWorker:
    """One fitted realism scorer, scoring partitions of records."""

    def __init__(self, scorer, threads: int):
        limit_threads(threads)
        self.scorer = scorer

    def score(self, matrix: np.ndarray) -> pd.DataFrame:
        return self.scorer.score(matrix)


def score_on_ray(scorer, matrix: np.ndarray, engine: EngineConfig) -> pd.DataFrame:
    """scorer.score(matrix), partitioned over ScoreWorker actors along the scorer's own chunks."""
    step = scorer.config.chunk_size * SCORE_CHUNKS_PER_TASK
    parts = [matrix[start:start + step] for start in range(0, len(matrix), step)]
    scorer_ref = ray.put(scorer)
    workers = [ScoreWorker.options(num_cpus=engine.cpus_per_worker).remote(scorer_ref, engine.threads)
               for _ in range(worker_count(engine, len(parts)))]
    log.info("engine/ray scoring %d records in %d partitions on %d workers", len(matrix), len(parts), len(workers))
    frames = list(ordered_results(ActorPool(workers), "score", parts, "scoring (ray)"))
    return pd.concat(frames, ignore_index=True)


@ray.remote
class JudgeWorker:
    """One loaded judge: renders prompts of record partitions, then scores runs of planned batches."""

    def __init__(self, judge_config, schema, reference, threads: int):
        from ehrjudge.judge.labels import LabelScorer
        from ehrjudge.judge.model import load_judge

        limit_threads(threads)
        self.config, self.schema, self.reference = judge_config, schema, reference
        self.model, self.tokenizer = load_judge(judge_config.model, judge_config.device, judge_config.dtype,
                                                judge_config.adapter, judge_config.precision)
        self.scorer = LabelScorer(self.tokenizer)
        self.prefix = None

    def setup(self) -> dict:
        """What the driver needs to plan: the tokenizer (for the saved chat template) and the model's context."""
        from ehrjudge.judge.scoring import model_context

        return {"tokenizer": self.tokenizer, "context": model_context(self.model)}

    def prompts(self, records: pd.DataFrame) -> dict:
        """The partition's prompts, their token lengths and the token prefix they share."""
        from ehrjudge.judge.labels import common_prefix_length
        from ehrjudge.judge.scoring import record_prompts

        prompts = record_prompts(records, self.schema, self.tokenizer, self.config.prompt, self.reference)
        ids = self.scorer.tokenize(prompts)
        return {"prompts": prompts, "lengths": [len(x) for x in ids], "prefix": ids[0][:common_prefix_length(ids)]}

    def judge(self, work: tuple) -> list[np.ndarray]:
        """(B, 10) label log-probabilities of each batch of `work` = (prefix token ids or None, batches)."""
        import torch

        prefix_ids, batches = work
        if prefix_ids is not None and (self.prefix is None or self.prefix.token_ids != tuple(prefix_ids)):
            self.prefix = self.scorer.prefix_cache(self.model, prefix_ids)  # once per worker and command
        with torch.no_grad():
            return [self.scorer.log_probs(self.model, batch, prefix=self.prefix if prefix_ids else None)
                    .double().cpu().numpy() for batch in batches]


def common_prefix(prefixes: list, shortest: int) -> list:
    """The token prefix common to all prompts, from each partition's: their common prefix, leaving the shortest
    prompt at least one own token (as judge.labels.common_prefix_length does over all prompts at once)."""
    first = prefixes[0]
    length = min(min(len(p) for p in prefixes), shortest - 1)
    for other in prefixes[1:]:
        length = next((j for j in range(length) if other[j] != first[j]), length)
    return list(first[:length])


def judge_on_ray(judge_config, records: pd.DataFrame, schema, reference, engine: EngineConfig):
    """(scores, tokenizer) as judge.scoring.judge_records gives them, over JudgeWorker actors."""
    from ehrjudge.errors import InputError
    from ehrjudge.judge.labels import LABELS, LabelScorer
    from ehrjudge.judge.scoring import check_context, record_caps, summarize_distribution, with_capped_score

    if "record_id" not in records.columns:
        raise InputError("records table has no record_id column", column="record_id")
    if len(records) == 0:
        raise InputError("no records to judge")
    n = len(records)
    batch_size = judge_config.batch_size
    tasks = -(-n // (batch_size * JUDGE_BATCHES_PER_TASK))
    workers = [JudgeWorker.options(num_cpus=engine.cpus_per_worker, num_gpus=engine.gpus_per_worker)
               .remote(judge_config, schema, reference, engine.threads)
               for _ in range(worker_count(engine, tasks, engine.gpus_per_worker))]
    setup = ray.get(workers[0].setup.remote())
    log.info("engine/ray judging %d records on %d workers", n, len(workers))
    pool = ActorPool(workers)
    parts = [records.iloc[start:start + PROMPT_RECORDS_PER_TASK]
             for start in range(0, n, PROMPT_RECORDS_PER_TASK)]
    rendered = list(ordered_results(pool, "prompts", parts, "rendering prompts (ray)"))
    prompts = [p for part in rendered for p in part["prompts"]]
    lengths = [length for part in rendered for length in part["lengths"]]
    check_context(lengths, setup["context"], LabelScorer(setup["tokenizer"]))
    prefix = None
    if judge_config.reuse_prefix and n > 1:  # the local engine's rule (judge_prompts)
        prefix = common_prefix([part["prefix"] for part in rendered], min(lengths))
        if not prefix:
            raise ValueError("prompts share no token prefix")
    order = np.argsort(lengths, kind="stable")
    batches = [order[start:start + batch_size] for start in range(0, n, batch_size)]
    runs = [batches[start:start + JUDGE_BATCHES_PER_TASK] for start in range(0, len(batches), JUDGE_BATCHES_PER_TASK)]
    work = [(prefix, [[prompts[i] for i in batch] for batch in run]) for run in runs]
    log_probs = np.empty((n, len(LABELS)), dtype=np.float64)
    for run, results in zip(runs, ordered_results(pool, "judge", work, "judging (ray)")):
        for batch, values in zip(run, results):
            log_probs[batch] = values
    summary = summarize_distribution(log_probs)
    summary.insert(0, "record_id", records["record_id"].to_numpy())
    return with_capped_score(summary, record_caps(records, schema, judge_config.prompt, reference)), setup["tokenizer"]
