"""Arrow tables as the pandas frames Great Expectations validates, and the dtype names of each column kind."""

from __future__ import annotations

import pandas as pd
import pyarrow as pa

# pandas dtype names each column kind may arrive as (pyarrow -> pandas, with or without nulls).
TYPE_NAMES = {
    "int": ["Int8Dtype", "Int16Dtype", "Int32Dtype", "Int64Dtype"],  # nullable: see PANDAS_TYPES
    "float": ["float32", "float64", "Float64"],
    "str": ["StringDtype"],
    "timestamp": ["datetime64[us]", "datetime64[ns]", "datetime64[ms]"],
}

# GE 1.24 matches a column's dtype against instances built from the type names it is given;
# pandas 3's default "str" dtype (na_value=nan) equals none of them, pd.StringDtype() does. Nullable
# integers keep a key with nulls an integer column, so the gate reports the nulls, not a float type.
PANDAS_TYPES = {
    pa.string(): pd.StringDtype(),
    pa.large_string(): pd.StringDtype(),
    pa.int8(): pd.Int8Dtype(),
    pa.int16(): pd.Int16Dtype(),
    pa.int32(): pd.Int32Dtype(),
    pa.int64(): pd.Int64Dtype(),
}


def to_frame(table: pa.Table) -> pd.DataFrame:
    # Nanosecond timestamps: GE 1.24 compares datetime64[ns] in one vectorized step and calls Python per value
    # for any other unit (Parquet's timestamps arrive as datetime64[us]): 9 s of a 1M-row day's validation.
    return table.to_pandas(types_mapper=PANDAS_TYPES.get, coerce_temporal_nanoseconds=True)


def as_float(frame: pd.DataFrame, columns: list[str]) -> pd.DataFrame:
    """The columns as float64, for range checks: GE compares in one vectorized step only for int64/float64
    columns and calls Python per value for any other dtype (int32, nullable Int*): 30 s at 7M rows."""
    return pd.DataFrame({c: pd.to_numeric(frame[c], errors="coerce").astype("float64") for c in columns})
