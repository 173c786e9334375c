"""cvr features: the raw categorical fields for CatBoost's own categorical handling, plus a few numbers.

Imported by the features stage (every click of the window) and by the model server (a batch of
request rows): one definition for training and serving. String columns are categorical to CatBoost,
numeric ones numeric (keiko.algorithms.catboost_classifier).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

INPUT_SCHEMA = {
    "event_time": "timestamp",
    "app_id": "int",
    "media_id": "int",
    "ad_id": "int",
    "campaign_id": "int",
    "advertiser_category": "str",
    "os": "str",
    "device_model": "str",
    "country": "str",
    "position": "int",
    "floor_price": "float",
}
CATEGORICAL = ("app_id", "campaign_id", "advertiser_category", "os", "country")
NUMERIC = ("position", "floor_price", "hour")
FEATURE_COLUMNS = [*CATEGORICAL, *NUMERIC]  # what transform() returns: gate_features expects exactly these


def as_category(values) -> np.ndarray:
    """A column as strings (object array); a missing value is its own category, ""."""
    if isinstance(values, pd.Categorical):
        labels = np.append(np.asarray(values.categories.astype(str), dtype=object), "")
        return labels[values.codes]  # code -1 (missing) picks the appended ""
    return np.asarray(values).astype(str).astype(object)


def transform(columns: dict) -> dict[str, np.ndarray]:
    hour = (columns["event_time"].astype("int64") // 3_600_000_000) % 24
    return {
        **{name: as_category(columns[name]) for name in CATEGORICAL},
        "position": np.asarray(columns["position"], dtype=np.float64),
        "floor_price": np.asarray(columns["floor_price"], dtype=np.float64),
        "hour": hour.astype(np.float64),
    }
