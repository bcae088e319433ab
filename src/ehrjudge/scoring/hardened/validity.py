"""Per-record validity against the value domains the reference shows (direction: fewer violations = more valid).

Hard violations (the record cannot be a patient of this cohort; each caps the score):
    binary column not in {0, 1};  count column negative or not a whole number;
    negative value in a column that is never negative in the reference;
    below the floor: x < min_ref in a column whose minimum holds >= `floor_mass` of the reference (a structural
        floor, e.g. admissions_count >= 1 when every extracted patient has an admission);
    far out of range: x outside [min_ref - m w, max_ref + m w], w = max_ref - min_ref, m = `range_margin`.
Soft violations (unusual, lower the score a little each): x outside [min_ref, max_ref] but within the margin;
a column constant in the reference (a code no reference patient has) on which the record differs.
"""

from __future__ import annotations

import numpy as np

from ehrjudge.cohort.schema import Schema

TOLERANCE = 1e-6  # absolute slack on the integer and {0, 1} checks (values written as text round-trip exactly)


class Validity:
    """`Validity(schema, range_margin, floor_mass).fit(reference)`, then `.check(records)`."""

    def __init__(self, schema: Schema, range_margin: float, floor_mass: float):
        self.names = schema.names
        kinds = np.array([f.kind for f in schema.features])
        self.is_binary, self.is_count = kinds == "binary", kinds == "count"
        self.range_margin, self.floor_mass = range_margin, floor_mass

    def fit(self, reference: np.ndarray) -> "Validity":
        low = reference.min(axis=0)
        return self.fit_domains(low, reference.max(axis=0), (reference == low).mean(axis=0))

    def fit_domains(self, low: np.ndarray, high: np.ndarray, floor_share: np.ndarray) -> "Validity":
        """The same fit from each column's minimum, maximum and share of the reference at the minimum (p,)."""
        self.low_, self.high_ = np.asarray(low, dtype=np.float64), np.asarray(high, dtype=np.float64)  # (p,)
        width = self.high_ - self.low_
        self.constant_ = width <= 0
        self.nonnegative_ = self.low_ >= 0
        self.floor_ = np.asarray(floor_share) >= self.floor_mass  # (p,) structural floor
        self.hard_low_ = np.where(self.floor_, self.low_, self.low_ - self.range_margin * width)
        self.hard_high_ = self.high_ + self.range_margin * width
        return self

    def check(self, records: np.ndarray) -> dict[str, np.ndarray]:
        """(n,) counts of hard and soft violations and the names of the first hard-violating columns."""
        binary_bad = self.is_binary & (np.minimum(np.abs(records), np.abs(records - 1.0)) > TOLERANCE)
        count_bad = self.is_count & ((records < -TOLERANCE) | (np.abs(records - np.rint(records)) > TOLERANCE))
        negative = self.nonnegative_ & (records < -TOLERANCE)
        varying = ~self.constant_
        out_far = varying & ((records < self.hard_low_ - TOLERANCE) | (records > self.hard_high_ + TOLERANCE))
        hard = binary_bad | count_bad | negative | out_far  # (n, p)
        outside = (records < self.low_ - TOLERANCE) | (records > self.high_ + TOLERANCE)
        soft = outside & ~hard  # constant columns land here: any deviation from the constant is outside
        return {
            "n_invalid": hard.sum(axis=1).astype(np.int64),
            "n_unusual": soft.sum(axis=1).astype(np.int64),
            "invalid_columns": np.array([_first_names(row, self.names) for row in hard], dtype=object),
        }


def _first_names(flags: np.ndarray, names: list[str], limit: int = 3) -> str:
    picked = [names[j] for j in np.flatnonzero(flags)]
    return ";".join(picked[:limit]) + (f";+{len(picked) - limit}" if len(picked) > limit else "")
