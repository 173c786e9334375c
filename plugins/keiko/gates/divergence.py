"""How far a column's values are from a training profile (KL divergence over the profile's buckets): the one
implementation behind gate_features (the test day against production's training days) and gate_drift (a day's
served inputs and scores against the serving version's training profile)."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pandas as pd

from keiko.gates.runner import Validation

OTHER = "__other__"
SMOOTHING = 1e-4  # reference weight floor: a value never seen in the reference is drift, not infinity


def partition(column: pd.Series, stats: dict, top_values: int) -> tuple[pd.Series, dict]:
    """Map a column onto the reference's buckets; returns the bucketed column (a Categorical of the bucket
    labels) and GE's partition_object."""
    if stats["kind"] == "float":
        edges = np.asarray(stats["quantiles"][1:-1])
        labels = [f"q{i:02d}" for i in range(len(edges) + 1)]
        codes = np.searchsorted(edges, column.to_numpy(), side="right")
        weights = {label: 1.0 / len(labels) for label in labels}
    else:
        top = list(stats["top"].items())[:top_values]
        total = float(stats["count"]) or 1.0
        weights = {str(value): count / total for value, count in top}
        weights[OTHER] = max(0.0, 1.0 - sum(weights.values()))
        labels = list(weights)
        codes = _bucket_codes(column, labels)
    bucketed = pd.Series(pd.Categorical.from_codes(codes, categories=labels), index=column.index)
    smoothed = np.maximum(np.array([weights[v] for v in labels]), SMOOTHING)
    return bucketed, {"values": labels, "weights": (smoothed / smoothed.sum()).tolist()}


def _bucket_codes(column: pd.Series, labels: list[str]) -> np.ndarray:
    """Each row's index in `labels` by its value as text (the profile's keys), OTHER's (the last) when it has
    none. Only the distinct values are turned into text: the test day has ~1M rows and a few thousand values."""
    codes, distinct = pd.factorize(column, use_na_sentinel=False)
    position = {label: i for i, label in enumerate(labels)}
    other = position[OTHER]
    by_distinct = np.array([position.get(str(value), other) for value in distinct], dtype=np.int64)
    return by_distinct[codes]


def divergence_validation(
    name: str,
    values: pd.DataFrame,
    profile: Mapping[str, dict],
    thresholds: Mapping[str, float],
    top_values: int,
    part: str = "",
) -> Validation:
    """One suite: each column of `thresholds`, bucketed as its `profile` entry, within its KL threshold."""
    import great_expectations.expectations as gxe

    frame, expectations = pd.DataFrame(index=values.index), []
    for column, threshold in thresholds.items():
        frame[column], partition_object = partition(values[column], profile[column], top_values)
        expectations.append(
            gxe.ExpectColumnKLDivergenceToBeLessThan(
                column=column, partition_object=partition_object, threshold=threshold
            )
        )
    return Validation(name, frame, expectations, partition=part)
