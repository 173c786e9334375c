"""Columnar inputs for feature code, built the same way from a warehouse table or from request rows.

Feature modules declare INPUT_SCHEMA {column: kind}; kinds are "int", "float", "str", "timestamp".
Ints arrive as int64, floats as float64, timestamps as datetime64[us]. Strings arrive from the warehouse
as pandas Categoricals (hashing the few distinct values, not every row, is what keeps feature code fast on
millions of rows) and from request rows as object arrays (for a few rows a Categorical costs ~700 us to
build, more than everything else); feature code must give the same answer for both.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

KINDS = ("int", "float", "str", "timestamp")
_EXAMPLE_VALUES = {"int": 1, "float": 1.0, "str": "example", "timestamp": dt.datetime(2026, 1, 1, 12)}
Columns = dict[str, Any]


def from_arrow(table: pa.Table, schema: Mapping[str, str]) -> Columns:
    columns: Columns = {}
    for name, kind in schema.items():
        chunked = table.column(name)
        if kind == "str":
            encoded = pc.dictionary_encode(chunked).combine_chunks()
            columns[name] = pd.Categorical.from_codes(
                np.asarray(encoded.indices.fill_null(-1), dtype=np.int64),
                categories=pd.Index(encoded.dictionary.to_pylist(), dtype=object),
            )
        elif kind == "int":
            columns[name] = np.asarray(chunked.fill_null(0), dtype=np.int64)
        elif kind == "float":
            columns[name] = np.asarray(chunked.fill_null(np.nan), dtype=np.float64)
        elif kind == "timestamp":
            columns[name] = np.asarray(chunked.cast(pa.timestamp("us")), dtype="datetime64[us]")
        else:
            raise ValueError(f"unknown column kind {kind!r} for {name!r}")
    return columns


_EPOCH = dt.datetime(1970, 1, 1)
_EPOCH_UTC = _EPOCH.replace(tzinfo=dt.UTC)
_MICROSECOND = dt.timedelta(microseconds=1)


def _epoch_us(value: dt.datetime) -> int:
    # Naive timestamps are UTC, as in the warehouse. Integer arithmetic: exact, and no float timestamp().
    return (value - (_EPOCH if value.tzinfo is None else _EPOCH_UTC)) // _MICROSECOND


def from_rows(rows: Sequence[Mapping[str, Any]], schema: Mapping[str, str]) -> Columns:
    """Rows already validated against the schema (see keiko.serving.validation)."""
    columns: Columns = {}
    for name, kind in schema.items():
        values = [row[name] for row in rows]
        if kind == "str":
            columns[name] = np.array(values, dtype=object)
        elif kind == "int":
            columns[name] = np.fromiter(values, dtype=np.int64, count=len(values))
        elif kind == "float":
            columns[name] = np.fromiter(values, dtype=np.float64, count=len(values))
        else:
            columns[name] = np.array([_epoch_us(v) for v in values], dtype=np.int64).astype("datetime64[us]")
    return columns


_SCALARS = {
    "int": np.int64,
    "float": np.float64,
    "str": lambda value: value,
    "timestamp": lambda value: np.datetime64(_epoch_us(value), "us"),
}


def scalar(kind: str, value: Any) -> Any:
    """The element from_rows' column of `kind` holds for `value`: the same dtype, as a numpy scalar (a row's
    derived features computed on scalars cost a fraction of one-element arrays)."""
    return _SCALARS[kind](value)


def example_row(schema: Mapping[str, str]) -> dict[str, Any]:
    """A valid request row of any schema (for warm-ups)."""
    return {name: _EXAMPLE_VALUES[kind] for name, kind in schema.items()}
