"""What every suite metric declares (SDMetrics-style): name, goal, range; and how results are recorded.

Edge-case policy: a metric that cannot be computed raises `MetricUndefinedError`; the suite records
`value: null` with the reason instead of a number (never a silent NaN).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Literal

from ehrjudge.errors import MetricUndefinedError


@dataclasses.dataclass(frozen=True)
class Metric:
    name: str  # "<category>/<what>", e.g. "privacy/membership_auc"
    goal: Literal["maximize", "minimize"]
    low: float | None  # None = unbounded
    high: float | None
    description: str

    @property
    def category(self) -> str:
        return self.name.split("/", 1)[0]

    def result(self, value: float, **details) -> dict:
        """A recorded value; raises MetricUndefinedError for NaN/inf or a value outside the declared range."""
        value = float(value)
        if not math.isfinite(value):
            raise MetricUndefinedError(f"{self.name}: value is {value}")
        tolerance = 1e-9
        if (self.low is not None and value < self.low - tolerance) or (
                self.high is not None and value > self.high + tolerance):
            raise AssertionError(f"{self.name}: {value} outside its declared range [{self.low}, {self.high}]")
        return {**self.header(), "value": value, "details": details}

    def undefined(self, reason: str) -> dict:
        return {**self.header(), "value": None, "reason": reason, "details": {}}

    def header(self) -> dict:
        return {"name": self.name, "category": self.category, "goal": self.goal,
                "range": [self.low, self.high], "description": self.description}
