"""Per-feature statistics of the reference cohort, for record texts that say how unusual each value is.

z_j(x) = (x_j - mean_j) / std_j with the reference mean and population std (ddof = 0): the same
standardization the realism score applies before its Mahalanobis distance (ehrjudge.scoring.realism,
`standardize: zscore`). A column is constant in the reference when std_j <= 1e-12 * max(1, |mean_j|) (the
scorer's rule too); there z is undefined and a record value off the constant is reported as "never in the
reference" instead of a number.

Beside them, the value domains and code-count distribution the hardened score's record checks need, all marginal
(no row of the reference is kept): per feature the minimum, the maximum and the share of patients at the minimum;
per table of code columns (code_groups) the histogram of the number of distinct codes a patient has, and its std.
scoring/hardened/checks.py builds the same checks from these whether it is fitted on a cohort or read from a judge
folder. Files written before these fields existed load with them left None.
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
    minimum: np.ndarray | None = None  # (p,)
    maximum: np.ndarray | None = None  # (p,)
    floor_share: np.ndarray | None = None  # (p,) share of the reference at its minimum
    code_counts: dict | None = None  # table -> {"levels": [...], "patients": [...], "std": float}
    # The reference patients themselves, for the one record text that needs them (`findings_dcr`): a fitted
    # scoring.hardened.privacy.ClosestPatient, attached by judge.reference.cohort_reference; never saved or compared.
    patients: object | None = dataclasses.field(default=None, compare=False, repr=False)
    # Fitted on the same patients: a scoring.hardened.typicality.Typicality (the hardened score's distance from the
    # reference's centre over held-out patients' median), for the findings texts' typicality line; never saved.
    typicality: object | None = dataclasses.field(default=None, compare=False, repr=False)

    @classmethod
    def from_cohort(cls, cohort: Cohort) -> "ReferenceStats":
        return cls.from_matrix(cohort.schema, cohort.matrix())  # (n, p) float64, finite (validated on load)

    @classmethod
    def from_matrix(cls, schema: Schema, matrix: np.ndarray) -> "ReferenceStats":
        minimum = matrix.min(axis=0)
        groups = code_groups(schema)
        counts = {}
        if groups:  # (n, tables) distinct codes a patient has in each table
            per_patient = np.stack([(matrix[:, columns] != 0).sum(axis=1) for columns in groups.values()],
                                   axis=1).astype(float)
            for group, column, std in zip(groups, per_patient.T, per_patient.std(axis=0)):
                levels, patients = np.unique(column, return_counts=True)
                counts[group] = {"levels": levels.tolist(), "patients": patients.tolist(), "std": float(std)}
        return cls(tuple(schema.names), matrix.mean(axis=0), matrix.std(axis=0), minimum, matrix.max(axis=0),
                   (matrix == minimum).mean(axis=0), counts)

    @property
    def has_domains(self) -> bool:
        """Whether the value domains and code-count histograms are here (files from before they existed lack them)."""
        return self.minimum is not None and self.code_counts is not None

    @classmethod
    def from_dir(cls, directory) -> "ReferenceStats":
        """Stats of the cohort directory (vectors.parquet + schema.json), e.g. a judge dataset's reference/."""
        return cls.from_cohort(Cohort.load(Path(directory)))

    def save(self, path) -> None:
        """JSON (names, mean, std): floats written by repr, so `load` gives back the same numbers bit for bit."""
        data = {"names": list(self.names), "mean": self.mean.tolist(), "std": self.std.tolist()}
        if self.has_domains:
            data.update(minimum=self.minimum.tolist(), maximum=self.maximum.tolist(),
                        floor_share=self.floor_share.tolist(), code_counts=self.code_counts)
        write_json(path, data)

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
        if "minimum" not in data:
            return cls(names, mean, std)
        try:
            domains = [np.asarray(data[key], float) for key in ("minimum", "maximum", "floor_share")]
            code_counts = {str(group): {"levels": [float(v) for v in entry["levels"]],
                                        "patients": [int(v) for v in entry["patients"]], "std": float(entry["std"])}
                           for group, entry in data["code_counts"].items()}
        except (KeyError, TypeError, ValueError, AttributeError) as error:
            raise InputError(f"unreadable value domains in the reference statistics: {error!r}", file=path) from error
        if any(d.shape != mean.shape for d in domains):
            raise InputError(f"reference statistics hold {len(names)} names but value domains of shapes "
                             f"{[d.shape for d in domains]}", file=path)
        return cls(names, mean, std, *domains, code_counts)

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


def code_groups(schema: Schema) -> dict[str, np.ndarray]:
    """Table -> column indices of its per-code count columns (the tables whose codes-per-patient the hardened score's
    sparsity check reads), tables in sorted order."""
    features = schema.features
    groups = sorted({f.group for f in features if f.code is not None and f.kind != "continuous"})
    return {g: np.array([j for j, f in enumerate(features) if f.group == g and f.code is not None
                         and f.kind != "continuous"]) for g in groups}
