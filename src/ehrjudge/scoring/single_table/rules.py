"""Clinical rule violations: a small interpreter for the rules kept as data in scoring/rules.yaml.

Each rule becomes the metric `rules/<id>`: the share of synthetic records violating it (minimize, [0, 1]),
with the count, the real set's own rate (a rule the real data also breaks measures the data, not the
generator) and a few violating record ids. The file's header documents the rule language.
"""

from __future__ import annotations

import copy
import re
from pathlib import Path

import numpy as np
import yaml

from ehrjudge.cohort.schema import Schema
from ehrjudge.errors import ConfigError, MetricUndefinedError
from ehrjudge.scoring.metric import Metric

DEFAULT_RULES = Path(__file__).resolve().parent.parent / "rules.yaml"
DEFAULT_SEVERITY = "important"  # a rule file without severities: every rule counts the same
DEFAULT_SEVERITY_WEIGHTS = {"essential": 1.0, "important": 0.7, "optional": 0.3}
SELECTOR_KEYS = {"name", "name_pattern", "group", "kind", "code_prefix"}
OPERATORS = {
    "<": lambda a, b, t: a < b - t, "<=": lambda a, b, t: a <= b + t,
    ">": lambda a, b, t: a > b + t, ">=": lambda a, b, t: a >= b - t,
    "==": lambda a, b, t: np.abs(a - b) <= t, "!=": lambda a, b, t: np.abs(a - b) > t,
}
REDUCERS = {
    "sum": lambda m: m.sum(axis=1), "max": lambda m: m.max(axis=1), "min": lambda m: m.min(axis=1),
    "max_abs": lambda m: np.abs(m).max(axis=1),
    "max_fraction": lambda m: np.abs(m - np.round(m)).max(axis=1),
}
ANY_VIOLATION = Metric("rules/any_violation_rate", "minimize", 0.0, 1.0,
                       "share of synthetic records violating at least one applicable rule")


def load_rules(path: str | Path | None = None) -> list[dict]:
    """Rules from YAML with `for_each` templates expanded and each rule's `severity` and `weight` set;
    malformed files raise ConfigError."""
    path = Path(path) if path is not None else DEFAULT_RULES
    try:
        data = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"cannot read rules file {path}: {exc}") from exc
    if not isinstance(data, dict) or not isinstance(data.get("rules"), list):
        raise ConfigError(f"{path}: expected a mapping with a `rules:` list")
    weights = data.get("severity_weights", DEFAULT_SEVERITY_WEIGHTS)
    if not isinstance(weights, dict) or not all(isinstance(w, (int, float)) and w > 0 for w in weights.values()):
        raise ConfigError(f"{path}: severity_weights must map severity names to positive numbers")
    rules = []
    for rule in data["rules"]:
        if not isinstance(rule, dict) or not {"id", "description", "violation"} <= set(rule):
            raise ConfigError(f"{path}: every rule needs id, description and violation; got {rule!r}")
        severity = rule.get("severity", DEFAULT_SEVERITY)
        if severity not in weights:
            raise ConfigError(f"{path}: rule {rule['id']!r} has severity {severity!r}; choose from {sorted(weights)}")
        variants = rule.get("for_each", [{}])
        for variables in variants:
            expanded = _substitute({k: v for k, v in rule.items() if k != "for_each"}, variables)
            expanded["severity"], expanded["weight"] = severity, float(weights[severity])
            rules.append(expanded)
    ids = [r["id"] for r in rules]
    if len(set(ids)) != len(ids):
        raise ConfigError(f"{path}: duplicate rule ids")
    return rules


def _substitute(node, variables: dict):
    if isinstance(node, str):
        return node.format_map(variables) if variables else node
    if isinstance(node, list):
        return [_substitute(item, variables) for item in node]
    if isinstance(node, dict):
        return {key: _substitute(value, variables) for key, value in node.items()}
    return copy.deepcopy(node)


def select_columns(schema: Schema, selector: dict) -> np.ndarray:
    """Indices of the schema features matching every key of `selector`."""
    unknown = set(selector) - SELECTOR_KEYS
    if unknown:
        raise ConfigError(f"unknown selector key(s) {sorted(unknown)}; allowed: {sorted(SELECTOR_KEYS)}")
    prefixes = selector.get("code_prefix")
    pattern = re.compile(selector["name_pattern"]) if "name_pattern" in selector else None
    picked = []
    for j, feature in enumerate(schema.features):
        if "name" in selector and feature.name != selector["name"]:
            continue
        if pattern is not None and not pattern.search(feature.name):
            continue
        if "group" in selector and feature.group != selector["group"]:
            continue
        if "kind" in selector and feature.kind != selector["kind"]:
            continue
        if prefixes is not None and (feature.code is None or
                                     not any(_bare_code(feature.code).startswith(str(p).upper()) for p in prefixes)):
            continue
        picked.append(j)
    return np.array(picked, dtype=np.int64)


def _bare_code(code: str) -> str:
    """The code without its vocabulary tag: "ICD10:Z34" -> "Z34" (clinosim, FHIR), "Z34" -> "Z34" (MIMIC)."""
    return str(code).upper().rsplit(":", 1)[-1]


def evaluate_expression(expression: dict, matrix: np.ndarray, schema: Schema) -> np.ndarray:
    """(n,) bool: does each record satisfy `expression`? Unmatched selectors raise MetricUndefinedError."""
    if "all" in expression:
        return np.logical_and.reduce([evaluate_expression(e, matrix, schema) for e in expression["all"]])
    if "any" in expression:
        return np.logical_or.reduce([evaluate_expression(e, matrix, schema) for e in expression["any"]])
    if "columns" not in expression or "op" not in expression:
        raise ConfigError(f"a condition needs columns and op (or all/any): {expression!r}")
    left = _reduce(expression, matrix, schema)
    if "times" in expression:
        left = left * _reduce(expression["times"], matrix, schema)
    if "than" in expression:
        right = _reduce(expression["than"], matrix, schema)
    elif "value" in expression:
        right = float(expression["value"])
    else:
        raise ConfigError(f"a condition needs `value` or `than`: {expression!r}")
    if expression["op"] not in OPERATORS:
        raise ConfigError(f"unknown operator {expression['op']!r}; allowed: {sorted(OPERATORS)}")
    tolerance = float(expression.get("tolerance", 1e-6)) * np.maximum(1.0, np.abs(right))
    return OPERATORS[expression["op"]](left, right, tolerance)


def _reduce(condition: dict, matrix: np.ndarray, schema: Schema) -> np.ndarray:
    columns = select_columns(schema, condition["columns"])
    if columns.size == 0:
        shown = {k: (v[:3] + ["..."] if isinstance(v, list) and len(v) > 3 else v)
                 for k, v in condition["columns"].items()}
        raise MetricUndefinedError(f"no column matches {shown}")
    reducer = condition.get("reduce", "sum")
    if reducer not in REDUCERS:
        raise ConfigError(f"unknown reduce {reducer!r}; allowed: {sorted(REDUCERS)}")
    return REDUCERS[reducer](matrix[:, columns])


def rule_metrics(real: np.ndarray, synthetic: np.ndarray, schema: Schema, record_ids: np.ndarray,
                 rules: list[dict]) -> list[dict]:
    """One result per rule (undefined where not applicable) plus the share violating any rule."""
    results, any_violation, applicable = [], np.zeros(len(synthetic), dtype=bool), []
    for rule in rules:
        metric = Metric(f"rules/{rule['id']}", "minimize", 0.0, 1.0, rule["description"])
        try:
            violated = evaluate_expression(rule["violation"], synthetic, schema)
            real_violated = evaluate_expression(rule["violation"], real, schema)
        except MetricUndefinedError as exc:
            results.append(metric.undefined(f"not applicable: {exc}"))
            continue
        any_violation |= violated
        applicable.append(rule["id"])
        results.append(metric.result(violated.mean(), violations=int(violated.sum()), n_records=len(violated),
                                     real_rate=float(real_violated.mean()),
                                     examples=[str(r) for r in record_ids[violated][:5]]))
    if applicable:
        results.append(ANY_VIOLATION.result(any_violation.mean(), rules=applicable))
    else:
        results.append(ANY_VIOLATION.undefined("no rule applies to this schema"))
    return results
