"""The clinical rules as a weighted checklist per record (Rubrics as Rewards, Gunjal et al. 2025, arXiv 2507.17746).

    rubric_pass = sum_j w_j [record passes rule j] / sum_j w_j      over the rules that apply to the schema, in [0, 1]
w_j is the weight of the rule's severity class (essential / important / optional, scoring/rules.yaml); a rule whose
columns are missing from the schema does not apply and is left out of both sums (never counted as passed).
"""

from __future__ import annotations

import logging

import numpy as np

from ehrjudge.cohort.schema import Schema
from ehrjudge.errors import MetricUndefinedError
from ehrjudge.scoring.single_table.rules import evaluate_expression

log = logging.getLogger(__name__)


class Rubric:
    def __init__(self, rules: list[dict], schema: Schema):
        self.schema = schema
        self.rules = []
        for rule in rules:
            try:  # applicability depends on the schema only: probe it once on a one-row zero record
                evaluate_expression(rule["violation"], np.zeros((1, len(schema.names))), schema)
            except MetricUndefinedError as exc:
                log.info("score/rubric rule %s does not apply: %s", rule["id"], exc)
                continue
            self.rules.append(rule)
        self.weights = np.array([rule["weight"] for rule in self.rules])  # (r,)
        self.essential = np.array([rule["severity"] == "essential" for rule in self.rules], dtype=bool)

    def check(self, records: np.ndarray) -> dict[str, np.ndarray]:
        n = len(records)
        if not self.rules:
            return {"rubric_pass": np.ones(n), "essential_violated": np.zeros(n, dtype=bool),
                    "rule_violations": np.full(n, "", dtype=object)}
        violated = np.stack([evaluate_expression(rule["violation"], records, self.schema)
                             for rule in self.rules], axis=1)  # (n, r)
        ids = [rule["id"] for rule in self.rules]
        return {
            "rubric_pass": (~violated) @ self.weights / self.weights.sum(),
            "essential_violated": (violated & self.essential).any(axis=1),
            "rule_violations": np.array([";".join(ids[j] for j in np.flatnonzero(row)) for row in violated],
                                        dtype=object),
        }
