"""Per-row scoring for hashed logistic regression without numpy in the steady state.

Scoring one auction through the vectorised feature code costs ~5 ms of numpy and pandas set-up on
one-element arrays. A hashed LR's score is bias + one weight per slot, and a slot's weight depends
only on the values of the slot's input columns, so each slot keeps a cache from those values to its
weight. A miss computes the weight with the model's own feature code (the same hashing as training),
so a cached weight is exactly the one the vectorised path looks up; only the feature module's
`derived()` runs per request, on one-element columns, because derived values (hour of a timestamp, a
price bucket) are functions of continuous inputs that do not repeat.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Mapping
from functools import lru_cache
from operator import itemgetter
from types import ModuleType
from typing import TYPE_CHECKING, Any

import numpy as np

from keiko.columns import example_row, from_rows
from keiko.hashing import hash_values, slot_index

if TYPE_CHECKING:
    from keiko.algorithms.hashed_lr import HashedLRModel

SLOT_CACHE_SIZE = 1 << 18  # distinct value tuples per slot; a miss costs ~100 us


class _LazyRow(Mapping):
    """One row as one-element columns, each built (exactly as from_rows builds it) on first read."""

    def __init__(self, row: Mapping[str, Any], schema: Mapping[str, str]) -> None:
        self.row, self.schema, self.built = row, schema, {}

    def __getitem__(self, name: str) -> Any:
        if name not in self.built:
            self.built[name] = from_rows([self.row], {name: self.schema[name]})[name]
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
        example = self.derived(_LazyRow(example_row(self.schema), self.schema))
        self.derived_dtypes = {name: values.dtype for name, values in example.items()}
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
        for name, column in self.derived(_LazyRow(row, self.schema)).items():
            values[name] = column[0].item()
        z = self.bias
        for key_of, weight in self.slots:
            z += weight(key_of(values))
        return 1.0 / (1.0 + math.exp(-z))
