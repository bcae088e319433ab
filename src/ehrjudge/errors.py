"""The project's named exceptions; every user-facing failure is one of these."""

from __future__ import annotations


class EhrJudgeError(Exception):
    """Base class: the CLI prints these without a traceback and exits with code 2."""


class InputError(EhrJudgeError):
    """Bad input data or settings, located as precisely as possible (file, column, row)."""

    def __init__(self, message: str, *, file=None, column: str | None = None, row=None):
        self.file, self.column, self.row = file, column, row
        where = []
        if file is not None:
            where.append(f"file {file}")
        if column is not None:
            where.append(f"column {column!r}")
        if row is not None:
            where.append(f"row {row}")
        super().__init__(f"{message} ({', '.join(where)})" if where else message)


class ConfigError(EhrJudgeError):
    """Unknown or mistyped configuration key or value."""


class MetricUndefinedError(EhrJudgeError):
    """A metric cannot be computed on this input (e.g. constant data for a correlation).

    The one edge-case policy for all metrics: raise this, never return NaN silently.
    Dataset-level reports catch it per metric and record the reason in place of a value.
    """
