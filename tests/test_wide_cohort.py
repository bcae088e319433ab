"""Scaling bugs found by benchmarks/scale.py at the original's width (3,000+ columns), pinned."""

import time

import numpy as np
import pandas as pd
import pytest

from ehrjudge.cohort.schema import FeatureSpec, Schema
from ehrjudge.errors import InputError


def code_schema(p: int) -> Schema:
    return Schema([FeatureSpec(f"dx_{j}", "diagnoses", "count", f"Diagnosis {j}", code=str(j)) for j in range(p)])


def test_check_columns_is_linear_in_the_columns():
    # Setup: 20,000 columns; the set of names was rebuilt per column (quadratic: 22 s at 12,000 columns)
    schema = code_schema(20_000)
    frame = pd.DataFrame(np.zeros((2, 20_000)), columns=schema.names)
    # Run
    started = time.perf_counter()
    schema.check_columns(frame)
    elapsed = time.perf_counter() - started
    # Assert: the linear check takes ~0.1 s; the quadratic one took minutes
    assert elapsed < 3.0


def test_check_columns_still_names_missing_and_extra_columns():
    # Setup: one schema column dropped, one unknown column added, record_id kept (a meta column)
    schema = code_schema(3000)
    frame = pd.concat([pd.DataFrame(np.zeros((1, 3000)), columns=schema.names).drop(columns="dx_17"),
                       pd.DataFrame({"surprise": [0.0], "record_id": ["r0"]})], axis=1)
    # Run / Assert
    with pytest.raises(InputError, match=r"1 schema column\(s\) missing, e.g. \['dx_17'\]; 1 column\(s\) not in the "
                                         r"schema, e.g. \['surprise'\]") as error:
        schema.check_columns(frame, file="records.parquet")
    assert error.value.column == "dx_17"
