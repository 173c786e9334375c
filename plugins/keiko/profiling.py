"""Per-column statistics of a feature set (profile.json): the reference later drift checks compare to."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pandas as pd

TOP_K = 100
QUANTILES = np.linspace(0, 1, 21)
# A column with at most this many distinct training values lists them all under "seen" (the model server
# counts request values outside that set); more is an id space too large to list, and goes unjudged.
MAX_SEEN_VALUES = 100_000


def _seen(values: np.ndarray) -> dict:
    return {"seen": sorted(values.tolist())} if len(values) <= MAX_SEEN_VALUES else {}


def _top_values(values: np.ndarray, counts: np.ndarray, n: int) -> dict:
    order = np.argsort(-counts, kind="stable")[:TOP_K]
    return {
        "distinct": len(values),
        "top": {str(values[i]): int(counts[i]) for i in order},
        "top_share": float(counts[order].sum() / n) if n else 0.0,
    }


def profile_column(values, kind: str) -> dict:
    n = len(values)
    if kind == "str":
        codes = np.asarray(values.codes)
        counts = np.bincount(codes[codes >= 0], minlength=len(values.categories))
        present = counts > 0
        categories = np.asarray(values.categories, dtype=object)[present]
        return {
            "kind": kind,
            "count": n,
            "null_share": float(np.mean(codes < 0)) if n else 0.0,
            **_top_values(categories, counts[present], n),
            **_seen(categories),
        }
    if kind == "int":
        unique, counts = np.unique(values, return_counts=True)
        return {
            "kind": kind,
            "count": n,
            "null_share": 0.0,
            **_top_values(unique, counts, n),
            **_seen(unique),
            **({"min": int(unique[0]), "max": int(unique[-1])} if n else {}),
        }
    if kind == "float":
        finite = values[np.isfinite(values)]
        return {
            "kind": kind,
            "count": n,
            "null_share": float(1 - len(finite) / n) if n else 0.0,
            "mean": float(finite.mean()) if len(finite) else None,
            "std": float(finite.std()) if len(finite) else None,
            "min": float(finite.min()) if len(finite) else None,
            "max": float(finite.max()) if len(finite) else None,
            "quantiles": np.quantile(finite, QUANTILES).tolist() if len(finite) else [],
        }
    stamps = pd.to_datetime(values)
    return {"kind": kind, "count": n, "min": str(stamps.min()), "max": str(stamps.max())}


def profile(columns: Mapping, schema: Mapping[str, str]) -> dict[str, dict]:
    return {name: profile_column(columns[name], kind) for name, kind in schema.items()}
