"""ctr features: hashed categorical fields, crosses, hour of day, weekend and floor-price buckets.

Imported by the features stage (millions of rows) and by the model server (a few rows per
request): one definition, so training and serving cannot drift apart.
"""

from __future__ import annotations

import numpy as np

from keiko.hashing import hash_values, slot_index

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

SLOTS: dict[str, tuple[str, ...]] = {
    "app_id": ("app_id",),
    "media_id": ("media_id",),
    "ad_id": ("ad_id",),
    "campaign_id": ("campaign_id",),
    "advertiser_category": ("advertiser_category",),
    "os": ("os",),
    "device_model": ("device_model",),
    "country": ("country",),
    "position": ("position",),
    "hour": ("hour",),
    # Clicks rise at the weekend (synth.WEEKDAY_CLICK_EFFECT: Sat +0.06, Sun +0.05 in logit vs ~0 on weekdays).
    # Without it, a Saturday test day after Sun..Thu training reads calibration to truth 0.930 (demo data,
    # ds 2026-11-21); with it (and model.yaml's 8-day window and decaying step) 0.990. Weekend, not day of
    # week: the 6 training days always hold a Saturday or a Sunday, but not always the test day's weekday.
    "weekend": ("weekend",),
    "floor_bucket": ("floor_bucket",),
    "advertiser_category_x_os": ("advertiser_category", "os"),
    "app_id_x_advertiser_category": ("app_id", "advertiser_category"),
    "position_x_os": ("position", "os"),
}

FEATURE_COLUMNS = list(SLOTS)  # what transform() returns: gate_features expects exactly these
FLOOR_BUCKET_WIDTH = 0.1  # in log(price): ~10% wide buckets
DAY_US = 86_400_000_000


def derived(columns: dict) -> dict:
    micros = columns["event_time"].astype("int64")
    hour = (micros // 3_600_000_000) % 24
    # 1 on Saturday and Sunday (UTC, as the warehouse's dt partitions), else 0: 1970-01-01 was a Thursday,
    # so +3 days puts Monday 00:00 at 0 mod a week, and the weekend is the week's last 2 of 7 days.
    weekend = (micros + 3 * DAY_US) % (7 * DAY_US) // (5 * DAY_US)
    # fmax: a missing (NaN) or non-positive floor counts as 1e-4. (Not clip + nan_to_num: the same
    # values, but 5x slower on the model server's one-row columns.)
    floor = np.fmax(columns["floor_price"], 1e-4)
    floor_bucket = np.floor(np.log(floor) / FLOOR_BUCKET_WIDTH).astype(np.int64)
    return {"hour": hour, "weekend": weekend, "floor_bucket": floor_bucket}


def transform(columns: dict, *, hash_bits: int) -> dict[str, np.ndarray]:
    """One int32 bucket index per slot and row, in [0, 2**hash_bits)."""
    values = {**columns, **derived(columns)}
    hashes = {name: hash_values(values[name]) for name in {c for cols in SLOTS.values() for c in cols}}
    return {slot: slot_index(slot, [hashes[c] for c in cols], hash_bits) for slot, cols in SLOTS.items()}
