"""Per-row scoring for hashed logistic regression without numpy arrays in the steady state.

Scoring one auction through the vectorised feature code costs ~5 ms of numpy and pandas set-up on
one-element arrays. A hashed LR's score is bias + one weight per slot, and a slot's weight depends
only on the values of the slot's input columns, so each slot keeps a cache from those values to its
weight. A miss computes the weight with the model's own feature code (the same hashing as training),
so a cached weight is exactly the one the vectorised path looks up; only the feature module's
`derived()` runs per request, because derived values (hour of a timestamp, a price bucket) are functions of
continuous inputs that do not repeat. It runs on the row's values as numpy scalars of its columns' dtypes
(keiko.columns.scalar): the same definition and the same ufuncs as on a column, at a fraction of one-element
arrays' cost; a derived() that needs arrays (indexing, len) gets one-element columns instead.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Mapping
from functools import lru_cache
from operator import itemgetter
from types import ModuleType
from typing import TYPE_CHECKING, Any

import numpy as np

from keiko.columns import example_row, from_rows, scalar
from keiko.hashing import hash_values, slot_index

if TYPE_CHECKING:
    from keiko.algorithms.hashed_lr import HashedLRModel

SLOT_CACHE_SIZE = 1 << 18  # distinct value tuples per slot; a miss costs ~100 us


class _LazyRow(Mapping):
    """One row as its columns would hold it, each value built on first read: numpy scalars of the columns'
    dtypes, or (`arrays`) one-element columns exactly as from_rows builds them."""

    def __init__(self, row: Mapping[str, Any], schema: Mapping[str, str], arrays: bool) -> None:
        self.row, self.schema, self.arrays, self.built = row, schema, arrays, {}

    def __getitem__(self, name: str) -> Any:
        if name not in self.built:
            kind = self.schema[name]
            if self.arrays:
                self.built[name] = from_rows([self.row], {name: kind})[name]
            else:
                self.built[name] = scalar(kind, self.row[name])
        return self.built[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self.schema)

    def __len__(self) -> int:
        return len(self.schema)


class RowScorer:
    """score(row) == the vectorised predict for that row (same weights, same summation order)."""

    def __init__(self, features: ModuleType, model: HashedLRModel) -> None:
        self.schema: dict[str, str] = features.INPUT_SCHEMA
        self.derived: Callable[[Mapping[str, Any]], dict] = features.derived
        self.bias = model.bias
        example = self.derived(_LazyRow(example_row(self.schema), self.schema, arrays=True))
        self.derived_dtypes = {name: values.dtype for name, values in example.items()}
        self.arrays = not _takes_scalars(self.derived, self.schema, example)
        bits = int(model.feature_params["hash_bits"])
        # itemgetter: a C call per slot picking the slot's values from the row (a scalar for one column).
        self.slots = [
            (itemgetter(*features.SLOTS[slot]), self._weight_lookup(slot, features.SLOTS[slot], bits, model))
            for slot in model.slots
        ]

    def _column(self, name: str, value: Any) -> Any:
        """A one-element column as the vectorised path holds it: from_rows for inputs, derived()'s dtype else."""
        if name in self.derived_dtypes:
            return np.array([value], dtype=self.derived_dtypes[name])
        return from_rows([{name: value}], {name: self.schema[name]})[name]

    def _weight_lookup(self, slot: str, columns: tuple[str, ...], bits: int, model: HashedLRModel):
        @lru_cache(maxsize=SLOT_CACHE_SIZE)
        def weight(key: Any) -> float:
            values = key if len(columns) > 1 else (key,)
            parts = [hash_values(self._column(name, value)) for name, value in zip(columns, values, strict=True)]
            return float(model.weights[slot_index(slot, parts, bits)[0]])

        return weight

    def score(self, row: Mapping[str, Any]) -> float:
        values = dict(row)
        for name, value in self.derived(_LazyRow(row, self.schema, self.arrays)).items():
            values[name] = value.item()  # a numpy scalar, or a one-element column
        z = self.bias
        for key_of, weight in self.slots:
            z += weight(key_of(values))
        return 1.0 / (1.0 + math.exp(-z))


def _takes_scalars(derived: Callable[[Mapping[str, Any]], dict], schema: Mapping[str, str], example: dict) -> bool:
    """Whether `derived` computes on a row's scalars what it computes on one-element columns (example: its
    output for the example row's columns)."""
    try:
        found = derived(_LazyRow(example_row(schema), schema, arrays=False))
    except (TypeError, IndexError, AttributeError, ValueError):
        return False
    return found.keys() == example.keys() and all(
        np.ndim(found[name]) == 0 and np.asarray(found[name]).dtype == column.dtype and found[name] == column[0]
        for name, column in example.items()
    )
