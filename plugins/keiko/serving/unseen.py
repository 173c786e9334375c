"""Request values the served version never saw in training, counted per field.

What training saw comes from the version's training profile (profile.json of the features stage, on the
training split only), which the registry records with the version (metrics.profile_uri, published beside
its artifact and never overwritten). Each input field is judged one way:

* `unseen_category`: a string field, or an int field with at most profiling.MAX_SEEN_VALUES distinct
  training values (ids, positions): the value is not one of them;
* `out_of_range`: a float field, or an int field with too many distinct values to list: the value is
  outside [min, max] of training;
* timestamps are not judged: every request comes after the training window by construction.

Counting is a set lookup or two comparisons per field and row, on the event loop's thread only.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from keiko.profiling import MAX_SEEN_VALUES

UNSEEN_CATEGORY, OUT_OF_RANGE = "unseen_category", "out_of_range"


class UnseenValues:
    """The counts for one version: rows counted, and per field how many were outside training's values."""

    def __init__(
        self,
        categories: Mapping[str, Iterable[Any]],
        ranges: Mapping[str, tuple[float, float]],
        unjudged: Mapping[str, str],
    ) -> None:
        self.categories = [(name, frozenset(seen)) for name, seen in categories.items()]
        self.ranges = [(name, low, high) for name, (low, high) in ranges.items()]
        self.unjudged = dict(unjudged)  # field -> why it is not judged
        self.rows = 0
        self.counts = {(name, UNSEEN_CATEGORY): 0 for name in categories}
        self.counts.update({(name, OUT_OF_RANGE): 0 for name in ranges})

    @classmethod
    def from_profile(cls, profile: Mapping[str, Any], schema: Mapping[str, str]) -> UnseenValues:
        columns = profile.get("columns", {})
        categories, ranges, unjudged = {}, {}, {}
        for name, kind in schema.items():
            column = columns.get(name, {})
            if kind == "timestamp":
                unjudged[name] = "a timestamp: requests always come after training"
            elif kind in ("str", "int") and "seen" in column:
                categories[name] = column["seen"]
            elif kind in ("int", "float") and column.get("min") is not None:
                ranges[name] = (column["min"], column["max"])
            elif kind == "str" and column.get("distinct", 0) > MAX_SEEN_VALUES:
                unjudged[name] = f"{column['distinct']:,} distinct training values: too many to list"
            else:
                unjudged[name] = "not in the training profile (a profile from before keiko recorded seen values)"
        return cls(categories, ranges, unjudged)

    @classmethod
    def unknown(cls, schema: Mapping[str, str], reason: str) -> UnseenValues:
        """Counting rows only, for a version without a readable training profile."""
        return cls({}, {}, dict.fromkeys(schema, reason))

    def count(self, rows: list[dict[str, Any]]) -> None:
        self.rows += len(rows)
        for row in rows:
            for name, seen in self.categories:
                if row[name] not in seen:
                    self.counts[name, UNSEEN_CATEGORY] += 1
            for name, low, high in self.ranges:
                if not low <= row[name] <= high:
                    self.counts[name, OUT_OF_RANGE] += 1

    def describe(self) -> dict[str, Any]:
        """For /version: rows counted and, per judged field, its kind and count; why the others are not judged."""
        return {
            "rows": self.rows,
            "fields": {name: {"kind": kind, "count": count} for (name, kind), count in self.counts.items()},
            "not_judged": self.unjudged,
        }
