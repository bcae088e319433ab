"""The patient-vector contract shared by every stage: a vectors table plus a schema naming each column.

A cohort directory holds
    vectors.parquet   one row per patient: `subject_id` then float feature columns, in schema order
    schema.json       {"source": ..., "features": [{name, group, kind, description, code}, ...], ...}
    raw/              the raw tables read or generated, for tracing
Synthetic record files carry `record_id` (and usually `generator`, `strength`) instead of `subject_id`.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd

from ehrjudge.errors import InputError
from ehrjudge.io import check_finite, check_ids, read_table, write_json, write_parquet

GROUPS = ("demographics", "admissions", "diagnoses", "procedures", "prescriptions", "labs")
Kind = Literal["binary", "count", "continuous"]
ID_COLUMNS = ("subject_id", "record_id")
META_COLUMNS = ("subject_id", "record_id", "generator", "strength", "split")


@dataclasses.dataclass(frozen=True)
class FeatureSpec:
    name: str  # column name in vectors.parquet
    group: str  # one of GROUPS
    kind: Kind
    description: str  # human-readable, e.g. the ICD title or lab name
    code: str | None = None  # the source code for code-count columns (ICD, NDC/drug, itemid)


@dataclasses.dataclass
class Schema:
    features: list[FeatureSpec]
    source: str = "unknown"
    settings: dict = dataclasses.field(default_factory=dict)  # featurization settings, for re-application

    @property
    def names(self) -> list[str]:
        return [f.name for f in self.features]

    def by_name(self) -> dict[str, FeatureSpec]:
        return {f.name: f for f in self.features}

    def to_json(self) -> dict:
        return {"source": self.source, "settings": self.settings,
                "features": [dataclasses.asdict(f) for f in self.features]}

    @classmethod
    def from_json(cls, data: dict, file=None) -> "Schema":
        try:
            features = [FeatureSpec(**f) for f in data["features"]]
        except (KeyError, TypeError) as exc:
            raise InputError(f"malformed schema: {exc}", file=file) from exc
        return cls(features=features, source=data.get("source", "unknown"), settings=data.get("settings", {}))

    def save(self, path) -> None:
        write_json(path, self.to_json())

    @classmethod
    def load(cls, path) -> "Schema":
        path = Path(path)
        if not path.exists():
            raise InputError("schema file not found", file=path)
        try:
            data = json.loads(path.read_text())
        except json.JSONDecodeError as exc:
            raise InputError(f"invalid JSON: {exc}", file=path) from exc
        return cls.from_json(data, file=path)

    def check_columns(self, frame: pd.DataFrame, file=None) -> None:
        """Raise InputError if `frame` lacks any schema column or has unknown feature columns."""
        names = set(self.names)  # once: a set per column made this quadratic (1.1 s at 3,000 columns, 22 s at 12,000)
        missing = [n for n in self.names if n not in frame.columns]
        extra = [c for c in frame.columns if c not in META_COLUMNS and c not in names]
        if missing or extra:
            parts = []
            if missing:
                parts.append(f"{len(missing)} schema column(s) missing, e.g. {missing[:5]}")
            if extra:
                parts.append(f"{len(extra)} column(s) not in the schema, e.g. {extra[:5]}")
            raise InputError("schema mismatch: " + "; ".join(parts), file=file,
                             column=(missing or extra)[0])

    def check_same(self, other: "Schema", file=None) -> None:
        """Raise InputError naming `file` and the first differing column if `other` has other columns."""
        if other.names != self.names:
            mismatch = next((b for a, b in zip(self.names, other.names) if a != b),
                            f"({len(other.names)} columns, the reference has {len(self.names)})")
            raise InputError("schema mismatch: the columns differ from the reference cohort's", file=file,
                             column=mismatch)


@dataclasses.dataclass
class Cohort:
    """Patient vectors (id column + features in schema order) with their schema."""

    vectors: pd.DataFrame
    schema: Schema

    @property
    def id_column(self) -> str:
        return "subject_id" if "subject_id" in self.vectors.columns else "record_id"

    @property
    def ids(self) -> np.ndarray:
        return self.vectors[self.id_column].to_numpy()

    def matrix(self) -> np.ndarray:
        """(n_patients, n_features) float64 array in schema order."""
        return self.vectors[self.schema.names].to_numpy(dtype=np.float64)

    def __len__(self) -> int:
        return len(self.vectors)

    def save(self, directory) -> None:
        """Write vectors.parquet and schema.json into an existing (temporary) directory."""
        directory = Path(directory)
        write_parquet(directory / "vectors.parquet", self.vectors)
        self.schema.save(directory / "schema.json")

    @classmethod
    def load(cls, directory) -> "Cohort":
        directory = Path(directory)
        if not directory.is_dir():
            raise InputError("cohort directory not found", file=directory)
        schema = Schema.load(directory / "schema.json")
        vectors = read_table(directory / "vectors.parquet")
        return cls(vectors=validate_vectors(vectors, schema, file=directory / "vectors.parquet"), schema=schema)


def validate_vectors(frame: pd.DataFrame, schema: Schema, file=None) -> pd.DataFrame:
    """Check ids (present, unique), columns and values (finite, float32 range); return the frame with features as
    float64 in schema order."""
    if len(frame) == 0:
        raise InputError("no records", file=file)
    if not any(c in frame.columns for c in ID_COLUMNS):
        raise InputError("no id column (subject_id or record_id)", file=file, column="subject_id")
    check_ids(frame, file=file)
    schema.check_columns(frame, file=file)
    check_finite(frame, schema.names, file=file)
    meta = [c for c in frame.columns if c in META_COLUMNS]
    out = frame[meta].copy()
    features = frame[schema.names].astype(np.float64)
    return pd.concat([out.reset_index(drop=True), features.reset_index(drop=True)], axis=1)


def schema_records(records: pd.DataFrame, schema: Schema) -> pd.DataFrame:
    """A DataFrame given in Python, as scorers take it: record_id (r0, r1, ... when absent), the other META_COLUMNS
    present, then the schema's columns, validated; other columns (scores, ...) dropped."""
    if not isinstance(records, pd.DataFrame):
        raise InputError(f"records must be a pandas DataFrame with the schema's columns, got {type(records).__name__}")
    frame = records.copy()
    if "record_id" not in frame.columns:
        frame.insert(0, "record_id", [f"r{i}" for i in range(len(frame))])
    kept = [c for c in frame.columns if c in META_COLUMNS] + [n for n in schema.names if n in frame.columns]
    return validate_vectors(frame[kept], schema)


def load_records(path, schema: Schema) -> pd.DataFrame:
    """Read a synthetic-records file (parquet/CSV) and validate it against `schema`."""
    return validate_vectors(read_table(path), schema, file=path)
