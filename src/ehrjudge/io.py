"""Atomic writes and validated table reads: nothing half-written, bad input located.

Temporary siblings are named `.NAME.tmp-PID-XXXX`: they are removed on every exit the process survives (the CLI
turns SIGTERM into SystemExit so this runs), and the next write of NAME removes those of dead processes, so a
killed run leaves nothing behind for good.
"""

from __future__ import annotations

import contextlib
import gzip
import json
import os
import re
import shutil
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd

from ehrjudge.errors import InputError

ID_COLUMNS = ("subject_id", "record_id")  # read as strings: "007" stays "007"
FLOAT32_MAX = float(np.finfo(np.float32).max)  # the Mahalanobis and kNN screens run in float32
_STALE = re.compile(r"\.(?:tmp|old)-(\d+)(?:-|$)")


def remove_stale(path: Path) -> None:
    """Remove `.NAME.tmp-*` / `.NAME.old-*` siblings of `path` left by processes that no longer run."""
    path = Path(path)
    if not path.parent.is_dir():
        return
    prefix = f".{path.name}."
    for leftover in path.parent.iterdir():
        if not leftover.name.startswith(prefix):
            continue
        tag = _STALE.match(leftover.name[len(prefix) - 1:])
        if tag is None or _alive(int(tag.group(1))):
            continue
        if leftover.is_dir() and not leftover.is_symlink():
            shutil.rmtree(leftover, ignore_errors=True)
        else:
            leftover.unlink(missing_ok=True)


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return False  # our own leftovers cannot be in use: each write makes a fresh name
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike, overwrite: bool = True):
    """Yield a temporary sibling directory that replaces `path` only if the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale(path)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.tmp-{os.getpid()}-", dir=path.parent))
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if path.exists():
        if not overwrite:
            shutil.rmtree(tmp, ignore_errors=True)
            raise InputError("output directory already exists", file=path)
        old = path.with_name(f".{path.name}.old-{os.getpid()}")
        os.replace(path, old)
        os.replace(tmp, path)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp, path)


@contextlib.contextmanager
def atomic_file(path: str | os.PathLike):
    """Yield a temporary path in the same folder; it is renamed onto `path` on success."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.tmp-{os.getpid()}-", dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def check_writable(path: str | os.PathLike, what: str = "output file") -> None:
    """Refuse an output file path that cannot be written (a folder, under a file, read-only) before any work."""
    path = Path(path)
    if path.is_dir():
        raise InputError(f"{what} is a directory", file=path)
    ancestor = path.parent
    while not ancestor.exists() and ancestor != ancestor.parent:
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        raise InputError(f"cannot write the {what}: {ancestor} is not a directory", file=path)
    try:  # os.access says yes to root on a read-only mount; a real probe file does not
        fd, probe = tempfile.mkstemp(prefix=f".{path.name}.tmp-{os.getpid()}-", dir=ancestor)
    except OSError as exc:
        raise InputError(f"cannot write the {what}: {exc.strerror or exc}", file=path) from exc
    os.close(fd)
    os.unlink(probe)


def write_text(path, text: str) -> None:
    with atomic_file(path) as tmp:
        tmp.write_text(text)


def write_json(path, obj) -> None:
    write_text(path, json.dumps(obj, indent=2, sort_keys=False, default=_json_default) + "\n")


def _json_default(obj):
    if isinstance(obj, (np.integer,)):
        return int(obj)
    if isinstance(obj, (np.floating,)):
        return float(obj)
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON serializable: {type(obj).__name__}")


def write_parquet(path, frame: pd.DataFrame) -> None:
    with atomic_file(path) as tmp:
        frame.to_parquet(tmp, index=False)


def write_csv(path, frame: pd.DataFrame, **kwargs) -> None:
    with atomic_file(path) as tmp:
        frame.to_csv(tmp, index=False, **kwargs)


def read_table(path) -> pd.DataFrame:
    """Read a parquet or CSV table; empty or unreadable files raise InputError naming the file.

    CSV: UTF-8 (a byte-order mark is stripped) and comma-separated. Id columns (subject_id, record_id) are
    strings in every format, so "007" stays "007"; a missing id stays None (check_ids refuses it).
    """
    path = Path(path)
    if not path.exists():
        raise InputError("file not found", file=path)
    if path.is_dir():
        raise InputError("expected a table file, got a directory", file=path)
    try:
        if path.suffix == ".parquet":
            frame = pd.read_parquet(path)
        else:
            frame = pd.read_csv(path, encoding="utf-8-sig", dtype={c: str for c in ID_COLUMNS})
    except UnicodeDecodeError as exc:
        raise InputError("not UTF-8 text", file=path, row=undecodable_line(path)) from exc
    except Exception as exc:  # noqa: BLE001 - any reader failure becomes a located InputError
        raise InputError(f"cannot read table: {first_line(exc)}", file=path) from exc
    if len(frame.columns) == 1 and re.search(r"[;\t|]", str(frame.columns[0])):
        raise InputError("not a comma-separated file (the header holds ';', tab or '|'); save it with commas",
                         file=path)
    if len(frame) == 0:
        raise InputError("table has no rows", file=path)
    for column in ID_COLUMNS:
        if column in frame.columns:
            frame[column] = [None if _missing(v) else str(v) for v in frame[column]]
    return frame


def _missing(value) -> bool:
    return value is None or (isinstance(value, float) and np.isnan(value)) or value is pd.NA


def first_line(exc: BaseException) -> str:
    """The first line of an exception's message (library errors run to many lines of advice)."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def open_binary(path: Path):
    """A binary handle on a file, gunzipped when it ends in .gz."""
    return gzip.open(path, "rb") if str(path).endswith(".gz") else open(path, "rb")


def undecodable_line(path) -> str | None:
    """'line N' of the first line that is not UTF-8 (None when every line decodes, or the file cannot be read)."""
    try:
        with open_binary(Path(path)) as handle:
            for number, line in enumerate(handle, start=1):
                try:
                    line.decode("utf-8")
                except UnicodeDecodeError:
                    return f"line {number}"
    except (OSError, EOFError):
        return None
    return None


def show(value) -> str:
    """A value for an error message: plain numbers (nan, 1e+40), quoted text; never numpy reprs."""
    if isinstance(value, (bool, np.bool_)):
        return str(bool(value))
    if isinstance(value, (int, float, np.integer, np.floating)):
        return repr(float(value)) if isinstance(value, (float, np.floating)) else str(int(value))
    return repr(str(value))


def check_finite(frame: pd.DataFrame, columns, file=None) -> None:
    """Raise InputError naming the first column and row holding NaN/inf, a non-number, or a value beyond the
    float32 range (|x| > 3.4e38: the distance screens run in float32 and would overflow)."""
    ids = _row_ids(frame)
    for column in columns:
        values = pd.to_numeric(frame[column], errors="coerce").to_numpy(dtype=float)
        finite = np.isfinite(values)
        bad = ~finite | (np.abs(np.where(finite, values, 0.0)) > FLOAT32_MAX)
        if bad.any():
            row = int(np.flatnonzero(bad)[0])
            raw = frame[column].iloc[row]
            problem = "is not a finite number" if not finite[row] else (
                f"lies beyond the float32 range (|x| > {FLOAT32_MAX:.3g}) that scoring computes in")
            raise InputError(f"value {show(raw)} {problem}", file=file, column=column, row=row_label(row, ids))


def _row_ids(frame: pd.DataFrame):
    column = next((c for c in ID_COLUMNS if c in frame.columns), None)
    return None if column is None else (column, frame[column].to_numpy())


def row_label(row: int, ids=None):
    """Row `row` (0-based) of a table, with its id when it has one: 7 or '7 (record_id=r7)'."""
    if ids is None or _missing(ids[1][row]):
        return row
    return f"{row} ({ids[0]}={ids[1][row]})"


def check_ids(frame: pd.DataFrame, file=None) -> None:
    """The table's id column (record_id or subject_id) has no missing and no repeated id."""
    column = next((c for c in ID_COLUMNS if c in frame.columns), None)
    if column is None:
        return
    ids = pd.Series([None if _missing(v) else str(v) for v in frame[column]])
    missing = ids.isna().to_numpy() | (ids.str.strip() == "").to_numpy()
    if missing.any():
        raise InputError(f"missing {column}", file=file, column=column, row=int(np.flatnonzero(missing)[0]))
    repeated = ids[ids.duplicated(keep=False)]
    if len(repeated):
        first, second = (int(i) for i in np.flatnonzero((ids == repeated.iloc[0]).to_numpy())[:2])
        raise InputError(f"duplicate {column} {repeated.iloc[0]!r} (rows {first} and {second})", file=file,
                         column=column, row=second)
