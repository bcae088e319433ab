"""Judge dataset splits as prompts and verifiable scores."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pandas as pd

from ehrjudge.cohort.schema import Schema
from ehrjudge.errors import InputError
from ehrjudge.io import read_table
from ehrjudge.judge.prompt import PromptConfig, needs_reference
from ehrjudge.judge.reference import dataset_reference
from ehrjudge.judge.scoring import record_caps, record_prompts
from ehrjudge.paths import DEFAULT_DATASET, cache_dir

SCORE_COLUMN = "realism_score"


@dataclasses.dataclass
class Split:
    """One split: record ids, prompts, integer realism scores (1..10) and the source frame."""

    name: str
    record_ids: list
    prompts: list[str]
    scores: np.ndarray  # (n,) int
    frame: pd.DataFrame
    caps: np.ndarray | None = None  # (n,) the cap each prompt's cap line states (10 where none); None: no cap line

    def __len__(self) -> int:
        return len(self.prompts)


def load_schema(dataset_dir: Path) -> Schema:
    return Schema.load(Path(dataset_dir) / "reference" / "schema.json")


def load_frame(dataset_dir: Path, split: str) -> pd.DataFrame:
    """A split's table, checked for record_id and a realism_score in 1..10."""
    path = Path(dataset_dir) / f"{split}.parquet"
    frame = read_table(path)
    for column in ("record_id", SCORE_COLUMN):
        if column not in frame.columns:
            raise InputError("missing column", file=path, column=column)
    scores = pd.to_numeric(frame[SCORE_COLUMN], errors="coerce").to_numpy()
    bad = ~np.isfinite(scores) | (scores < 1) | (scores > 10) | (scores != np.round(scores))
    if bad.any():
        row = int(np.flatnonzero(bad)[0])
        raise InputError(f"realism_score must be an integer in 1..10, got {frame[SCORE_COLUMN].iloc[row]!r}",
                         file=path, column=SCORE_COLUMN, row=row)
    return frame.reset_index(drop=True)


def load_split(dataset_dir: Path, split: str, tokenizer, prompt: PromptConfig, schema: Schema | None = None,
               limit: int = 0, seed: int = 0) -> Split:
    """Load `split` (a seeded random subset of `limit` rows if > 0) and render its prompts."""
    frame = load_frame(dataset_dir, split)
    if limit and limit < len(frame):
        # A seeded random subset: split files may be ordered by generator, so the first rows are not a sample.
        chosen = np.sort(np.random.default_rng(seed).choice(len(frame), limit, replace=False))
        frame = frame.iloc[chosen].reset_index(drop=True)
    schema = schema or load_schema(dataset_dir)
    reference = dataset_reference(dataset_dir, prompt.record_format) if needs_reference(prompt.record_format) else None
    prompts = record_prompts(frame, schema, tokenizer, prompt, reference)
    return Split(split, frame["record_id"].tolist(), prompts, frame[SCORE_COLUMN].to_numpy(dtype=int), frame,
                 record_caps(frame, schema, prompt, reference))


def resolve_dataset(path: str | Path | None) -> Path:
    """The judge dataset dir: the given one, checked, or the project's default dataset."""
    if path is None and not (cache_dir("datasets") / DEFAULT_DATASET).exists():
        raise InputError(f"the default judge dataset is not built yet: run `ehrjudge dataset --reference "
                         f"<default cohort> --out {cache_dir('datasets') / DEFAULT_DATASET}`")
    path = Path(path) if path is not None else cache_dir("datasets") / DEFAULT_DATASET
    missing = [name for name in ("reference/schema.json", "train.parquet", "val.parquet") if not (path / name).exists()]
    if missing:
        raise InputError(f"not a judge dataset: missing {missing}", file=path)
    return path
