"""The project's named exceptions; every user-facing failure is one of these."""

from __future__ import annotations

import contextlib


class EhrJudgeError(Exception):
    """Base class: the CLI prints these without a traceback and exits with code 2."""


class InputError(EhrJudgeError):
    """Bad input data or settings, located as precisely as possible (file, column, row)."""

    def __init__(self, message: str, *, file=None, column: str | None = None, row=None):
        self.message, self.file, self.column, self.row = message, file, column, row
        where = []
        if file is not None:
            where.append(f"file {file}")
        if column is not None:
            where.append(f"column {column!r}")
        if row is not None:
            where.append(f"row {row}")
        super().__init__(f"{message} ({', '.join(where)})" if where else message)


@contextlib.contextmanager
def about_file(file):
    """InputErrors raised in the block that name no file are about `file` (e.g. a reference cohort too small)."""
    try:
        yield
    except InputError as exc:
        if exc.file is not None or file is None:
            raise
        raise InputError(exc.message, file=file, column=exc.column, row=exc.row) from exc


class ConfigError(EhrJudgeError):
    """Unknown or mistyped configuration key or value."""


class MetricUndefinedError(EhrJudgeError):
    """A metric cannot be computed on this input (e.g. constant data for a correlation).

    The one edge-case policy for all metrics: raise this, never return NaN silently.
    Dataset-level reports catch it per metric and record the reason in place of a value.
    """
