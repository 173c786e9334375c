"""user_value features: a user's daily profile snapshot, for CatBoost (os and country categorical, counts numeric).

Imported by the features stage (every snapshot of the window) and by batch_score (the run's key set: each user's
latest snapshot): one definition for training and scoring. The model is served from the batch store, not from
request rows, so no request ever reaches transform().
"""

from __future__ import annotations

import numpy as np

INPUT_SCHEMA = {
    "os": "str",
    "country": "str",
    "sessions_today": "int",
    "sessions_7d": "int",
    "active_days_7d": "int",
    "purchases_28d": "int",
}
CATEGORICAL = ("os", "country")
NUMERIC = ("sessions_today", "sessions_7d", "active_days_7d", "purchases_28d")
FEATURE_COLUMNS = [*CATEGORICAL, *NUMERIC]  # what transform() returns: gate_features expects exactly these


def transform(columns: dict) -> dict[str, np.ndarray]:
    return {
        **{name: np.asarray(columns[name]).astype(str).astype(object) for name in CATEGORICAL},
        **{name: np.asarray(columns[name], dtype=np.float64) for name in NUMERIC},
    }
