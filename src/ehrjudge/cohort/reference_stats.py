"""Per-feature statistics of the reference cohort, for record texts that say how unusual each value is.

z_j(x) = (x_j - mean_j) / std_j with the reference mean and population std (ddof = 0): the same
standardization the realism score applies before its Mahalanobis distance (ehrjudge.scoring.realism,
`standardize: zscore`). A column is constant in the reference when std_j <= 1e-12 * max(1, |mean_j|) (the
scorer's rule too); there z is undefined and a record value off the constant is reported as "never in the
reference" instead of a number.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np

from ehrjudge.cohort.schema import Cohort, Schema
from ehrjudge.errors import InputError
from ehrjudge.io import write_json

CONSTANT_TOLERANCE = 1e-12  # same rule as ehrjudge.scoring.realism.CONSTANT_TOLERANCE


@dataclasses.dataclass(frozen=True)
class ReferenceStats:
    """Mean and std (ddof 0) of every schema feature over the reference cohort."""

    names: tuple[str, ...]
    mean: np.ndarray  # (p,)
    std: np.ndarray  # (p,)

    @classmethod
    def from_cohort(cls, cohort: Cohort) -> "ReferenceStats":
        matrix = cohort.matrix()  # (n, p) float64, finite (validated on load)
        return cls(tuple(cohort.schema.names), matrix.mean(axis=0), matrix.std(axis=0))

    @classmethod
    def from_dir(cls, directory) -> "ReferenceStats":
        """Stats of the cohort directory (vectors.parquet + schema.json), e.g. a judge dataset's reference/."""
        return cls.from_cohort(Cohort.load(Path(directory)))

    def save(self, path) -> None:
        """JSON (names, mean, std): floats written by repr, so `load` gives back the same numbers bit for bit."""
        write_json(path, {"names": list(self.names), "mean": self.mean.tolist(), "std": self.std.tolist()})

    @classmethod
    def load(cls, path) -> "ReferenceStats":
        path = Path(path)
        if not path.is_file():
            raise InputError("reference statistics file not found", file=path)
        try:
            data = json.loads(path.read_text())
            names, mean, std = tuple(data["names"]), np.asarray(data["mean"], float), np.asarray(data["std"], float)
        except (json.JSONDecodeError, KeyError, TypeError, ValueError) as error:
            raise InputError(f"unreadable reference statistics: {error}", file=path) from error
        if not (len(names) == mean.shape[0] == std.shape[0]) or mean.ndim != 1 or std.ndim != 1:
            raise InputError(f"reference statistics hold {len(names)} names, {mean.shape} means, {std.shape} stds",
                             file=path)
        return cls(names, mean, std)

    def check_schema(self, schema: Schema) -> None:
        if tuple(schema.names) != self.names:
            missing = [n for n in schema.names if n not in self.names]
            raise InputError(f"reference statistics do not match the records' schema (e.g. missing {missing[:3]})",
                             column=missing[0] if missing else None)

    def z_scores(self, values: dict[str, float]) -> dict[str, float]:
        """Feature -> z; +inf/-inf for a value off a reference-constant column, 0.0 on it."""
        out = {}
        for name, mean, std in zip(self.names, self.mean, self.std):
            delta = float(values[name]) - float(mean)
            if std <= CONSTANT_TOLERANCE * max(1.0, abs(float(mean))):
                off = abs(delta) > CONSTANT_TOLERANCE * max(1.0, abs(float(mean)))
                out[name] = float(np.copysign(np.inf, delta)) if off else 0.0
            else:
                out[name] = delta / float(std)
        return out
