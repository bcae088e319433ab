"""The generator's record format: one patient vector as a few lines of text, and the parser back to a vector.

One line per schema group, in the schema's group order, each `group: key value key value ...` with the
record's non-zero columns only; keys are column names without their group prefix:

    demographics: gender 1 age 67 is_dead 0
    admissions: count 3 los_mean 4.2 los_sum 12.6 los_max 7 los_min 1.5 los_std 2.9
    diagnoses: count 2 i10 1 e119 1
    procedures:
    prescriptions: count 2 metformin 2
    labs: count 4 glucose 2 hba1c 2 mean 6.1 sum 24.4 max 9 min 5.2 std 1.2

Binary and count columns are written as integers when they are integers (a fractional count is written as it
is, so the parser, and the verifiable score's validity check, see it); continuous values with `digits`
significant digits, or exactly (Python's shortest round-trip repr) when `digits` is None. Every token costs a
generation step: the demographics line keeps zeros (a record always states sex, age and death), other lines drop
them. Output the parser cannot read raises RecordParseError with the reason; tune-generator gives such a
completion the defined lowest reward and counts it.
"""

from __future__ import annotations

import dataclasses
import math
import re

import numpy as np

from ehrjudge.cohort.schema import GROUPS, Schema

ALWAYS_WRITTEN = ("demographics",)  # groups whose zero values are written too
NUMBER = re.compile(r"^-?(\d+(\.\d*)?|\.\d+)([eE][-+]?\d+)?$")


class RecordParseError(ValueError):
    """A completion that is not a record of the schema (the reason is the message)."""


def _strip(name: str, group: str) -> str:
    if name.startswith(f"{group}_"):  # admissions_los_mean -> los_mean
        return name[len(group) + 1:]
    head, _, tail = name.partition("_")  # dx_icd10_i10 -> icd10_i10, rx_metformin -> metformin
    return tail or head


def column_keys(schema: Schema) -> dict[str, list[tuple[str, int]]]:
    """{group: [(key, column index), ...]} in schema order; keys unique within a group.

    A key is the column name without its group prefix (`diagnoses_count` -> `count`, `rx_metformin` ->
    `metformin`); a sub-prefix shared by every code column of a group (`icd10_`, `cpt_`) is dropped too. A group
    whose shortened keys would collide keeps full column names."""
    groups: dict[str, list[tuple[str, int]]] = {}
    for index, feature in enumerate(schema.features):
        groups.setdefault(feature.group, []).append((_strip(feature.name, feature.group), index))
    for group, entries in groups.items():
        coded = [key for key, index in entries if schema.features[index].code is not None]
        heads = {key.partition("_")[0] for key in coded}
        if len(coded) > 1 and len(heads) == 1 and all("_" in key for key in coded):
            shared = heads.pop() + "_"
            entries[:] = [(key[len(shared):] if schema.features[index].code is not None else key, index)
                          for key, index in entries]
        keys = [key for key, _ in entries]
        if len(set(keys)) < len(keys) or any(not key or " " in key for key in keys):
            entries[:] = [(schema.features[index].name, index) for _, index in entries]
    return groups


def _group_order(schema: Schema) -> list[str]:
    seen = list(dict.fromkeys(f.group for f in schema.features))
    return sorted(seen, key=lambda g: GROUPS.index(g) if g in GROUPS else len(GROUPS))


@dataclasses.dataclass
class RecordFormat:
    """Text <-> vector for one schema."""

    schema: Schema
    digits: int | None = 3  # significant digits of continuous values; None = exact round trip

    def __post_init__(self):
        self.keys = column_keys(self.schema)
        self.groups = _group_order(self.schema)
        self.lookup = {group: {key: index for key, index in self.keys[group]} for group in self.groups}
        self.discrete = np.array([f.kind != "continuous" for f in self.schema.features])

    def _value(self, value: float, index: int) -> str:
        if float(value).is_integer() and (self.discrete[index] or abs(value) < 1e15):
            return str(int(value))
        if self.digits is None or self.discrete[index]:
            return repr(float(value))
        rounded = float(f"{value:.{self.digits}g}")  # digits are one token each: 7110, not 7.11e+03
        return str(int(rounded)) if rounded.is_integer() and abs(rounded) < 1e15 else repr(rounded)

    def to_text(self, vector: np.ndarray) -> str:
        """The record's lines (no trailing newline)."""
        lines = []
        for group in self.groups:
            parts = [f"{group}:"]
            for key, index in self.keys[group]:
                value = float(vector[index])
                if value != 0.0 or group in ALWAYS_WRITTEN:
                    parts.append(f"{key} {self._value(value, index)}")
            lines.append(" ".join(parts))
        return "\n".join(lines)

    def rounded(self, vector: np.ndarray) -> np.ndarray:
        """The vector as the text carries it (continuous values at `digits` significant digits)."""
        return self.parse(self.to_text(vector))

    def parse(self, text: str) -> np.ndarray:
        """The vector a record text names; RecordParseError (with the reason) when it is not one record."""
        lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
        if len(lines) != len(self.groups):
            raise RecordParseError(f"{len(lines)} non-empty line(s), a record has {len(self.groups)} "
                                   f"({', '.join(self.groups)})")
        vector = np.zeros(len(self.schema.features), dtype=np.float64)
        for line, group in zip(lines, self.groups):
            name, colon, rest = line.partition(":")
            if not colon or name.strip() != group:
                raise RecordParseError(f"expected a line starting {group!r}:, got {line[:40]!r}")
            tokens = rest.split()
            if len(tokens) % 2:
                raise RecordParseError(f"{group}: a key without a value ({tokens[-1]!r})")
            seen = set()
            for key, raw in zip(tokens[::2], tokens[1::2]):
                index = self.lookup[group].get(key)
                if index is None:
                    raise RecordParseError(f"{group}: {key!r} is not a column of the schema")
                if key in seen:
                    raise RecordParseError(f"{group}: {key!r} given twice")
                if not NUMBER.match(raw):
                    raise RecordParseError(f"{group}: {key} has value {raw!r}, not a number")
                value = float(raw)
                if not math.isfinite(value) or abs(value) > np.finfo(np.float32).max:
                    raise RecordParseError(f"{group}: {key} = {raw} is out of range")
                seen.add(key)
                vector[index] = value
        return vector
