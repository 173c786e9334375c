"""Deterministic 64-bit hashing of feature values and crosses into 2**bits buckets.

Python's hash() is salted per process, so it cannot be shared between training and serving;
pandas' hash_array (SipHash with a fixed key) is stable across processes and vectorised.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)


def _mix(x: np.ndarray) -> np.ndarray:
    """splitmix64 finaliser: spreads the bits of a combined hash before taking the top bits."""
    x = x ^ (x >> np.uint64(30))
    x = x * _M1
    x = x ^ (x >> np.uint64(27))
    x = x * _M2
    return x ^ (x >> np.uint64(31))


def hash_values(values: np.ndarray | pd.Categorical) -> np.ndarray:
    """uint64 hash per value; Categoricals hash their categories once (nulls hash as '<null>')."""
    if isinstance(values, pd.Categorical):
        categories = np.append(np.asarray(values.categories, dtype=object), "<null>")
        category_hashes = pd.util.hash_array(categories, categorize=False)
        codes = np.where(values.codes < 0, len(categories) - 1, values.codes)
        return category_hashes[codes]
    return pd.util.hash_array(np.asarray(values), categorize=False)


def slot_index(name: str, parts: list[np.ndarray], bits: int) -> np.ndarray:
    """Bucket index of a slot (one field or a cross of fields), salted by the slot's name."""
    salt = pd.util.hash_array(np.array([name], dtype=object), categorize=False)[0]
    combined = np.full(len(parts[0]), salt, dtype=np.uint64)
    with np.errstate(over="ignore"):
        for part in parts:
            combined = _mix(combined * _GOLDEN + part)
    return (combined >> np.uint64(64 - bits)).astype(np.int32)
