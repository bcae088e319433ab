"""Which records of a synthetic set are real patients, so that no report shows their contents.

A judge dataset holds real patients on purpose (the `holdout_real` family, the realism ceiling), and a generator
can reproduce a reference patient exactly (a noisy copy at strength 0, a collapsed mode) or nearly (the realism
score's near_copy flag). Reports list such records by their synthetic record_id and scores only; their record text
is withheld.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

REAL_GENERATORS = ("holdout_real",)  # families whose records are real patients
WITHHELD = "(record text withheld: a real patient's record)"


def row_hashes(frame: pd.DataFrame, names: list[str]) -> np.ndarray:
    """One uint64 per row of the feature columns `names` (equal rows, equal hashes)."""
    values = frame[names].astype(np.float64) + 0.0  # -0.0 -> 0.0, so equal numbers hash alike
    return pd.util.hash_pandas_object(values, index=False).to_numpy()


def real_rows(records: pd.DataFrame, names: list[str], real: list[pd.DataFrame]) -> np.ndarray:
    """(n,) bool: the record's generator is a real-patient family, the realism score flagged it a near copy of a
    reference patient (`near_copy`: its text would show that patient, e.g. an interpolation with t ~ 0), or its
    features equal a patient's of `real`."""
    mask = np.zeros(len(records), dtype=bool)
    if "generator" in records.columns:
        mask |= records["generator"].astype(str).isin(REAL_GENERATORS).to_numpy()
    if "near_copy" in records.columns:
        mask |= records["near_copy"].astype(bool).to_numpy()
    known = [row_hashes(cohort, names) for cohort in real if all(n in cohort.columns for n in names)]
    if known and names:
        mask |= np.isin(row_hashes(records, names), np.concatenate(known))
    return mask


def dataset_patients(dataset: Path) -> list[pd.DataFrame]:
    """The real patients of a judge dataset folder: its reference/ and holdout/ vectors (those present)."""
    return [pd.read_parquet(dataset / part / "vectors.parquet") for part in ("reference", "holdout")
            if (dataset / part / "vectors.parquet").exists()]


def withhold(texts: list[str], mask: np.ndarray) -> list[str]:
    """The texts, with those of real patients replaced by WITHHELD."""
    return [WITHHELD if hidden else text for text, hidden in zip(texts, mask)]


def near_copy_ids(dataset: Path, splits: list[str]) -> set[str]:
    """record_ids the realism score flagged `near_copy` in these splits of a judge dataset (for callers whose
    records no longer carry the score columns)."""
    ids: set[str] = set()
    for split in splits:
        path = Path(dataset) / f"{split}.parquet"
        if path.exists():
            frame = pd.read_parquet(path)
            if "near_copy" in frame.columns:
                ids |= set(frame.loc[frame["near_copy"].astype(bool), "record_id"].astype(str))
    return ids
