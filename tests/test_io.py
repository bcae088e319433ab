"""Atomic outputs: a failed block leaves the previous output intact and no temp files behind."""

import pandas as pd
import pytest

from ehrjudge.errors import InputError
from ehrjudge.io import atomic_dir, check_finite, read_table, write_json


def test_atomic_dir_keeps_old_output_on_failure(tmp_path):
    # Setup
    out = tmp_path / "out"
    with atomic_dir(out) as tmp:
        (tmp / "a.txt").write_text("old")
    # Run
    with pytest.raises(RuntimeError):
        with atomic_dir(out) as tmp:
            (tmp / "a.txt").write_text("new")
            raise RuntimeError("boom")
    # Assert
    assert (out / "a.txt").read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_write_json_atomic(tmp_path):
    write_json(tmp_path / "x.json", {"a": 1})
    assert (tmp_path / "x.json").read_text().strip().startswith("{")
    assert [p.name for p in tmp_path.iterdir()] == ["x.json"]


def test_check_finite_names_column_and_row():
    frame = pd.DataFrame({"a": [1.0, 2.0], "b": [0.0, float("inf")]})
    with pytest.raises(InputError, match=r"column 'b', row 1"):
        check_finite(frame, ["a", "b"], file="f.parquet")


def test_read_table_empty_file(tmp_path):
    path = tmp_path / "empty.csv"
    path.write_text("a,b\n")
    with pytest.raises(InputError, match="no rows"):
        read_table(path)
