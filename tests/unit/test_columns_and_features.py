"""Training and serving must compute identical features from the same rows."""

import datetime as dt
import json
import subprocess
import sys

import numpy as np
import pyarrow as pa
import pytest

from keiko.columns import from_arrow, from_rows
from keiko.modeldef import load_model, model_names

ROWS = [
    {
        "event_time": dt.datetime(2026, 11, 21, 13, 5, 7),
        "app_id": 1003,
        "media_id": 100_010,
        "ad_id": 500_123,
        "campaign_id": 7001,
        "advertiser_category": "IAB3",
        "os": "ios",
        "device_model": "ios-model-4",
        "country": "JP",
        "position": 2,
        "floor_price": 0.73,
    },
    {
        "event_time": dt.datetime(2026, 11, 21, 23, 59, 59),
        "app_id": 1200,
        "media_id": 100_900,
        "ad_id": 500_001,
        "campaign_id": 7100,
        "advertiser_category": "IAB19",
        "os": "android",
        "device_model": "android-model-0",
        "country": "US",
        "position": 4,
        "floor_price": 2.5,
    },
]
# user_value's inputs, daily profile snapshots: batch_score reads them from the warehouse, never from requests.
PROFILE_ROWS = [
    {"os": "ios", "country": "JP", "sessions_today": 3, "sessions_7d": 9, "active_days_7d": 4, "purchases_28d": 1},
    {"os": "android", "country": "BR", "sessions_today": 1, "sessions_7d": 1, "active_days_7d": 1, "purchases_28d": 0},
]


@pytest.fixture(scope="module")
def ctr():
    return load_model("ctr")


@pytest.mark.parametrize("name", model_names())
def test_rows_and_warehouse_table_give_the_same_features(name):
    """Strings arrive as Categoricals from the warehouse and as object arrays from requests: same features."""
    model = load_model(name)
    schema, params = model.features.INPUT_SCHEMA, model.config.feature_params
    rows = ROWS if set(schema) <= set(ROWS[0]) else PROFILE_ROWS
    table = pa.Table.from_pylist(rows)
    from_table = model.features.transform(from_arrow(table, schema), **params)
    from_request = model.features.transform(from_rows(rows, schema), **params)
    assert list(from_table) == list(from_request) == model.features.FEATURE_COLUMNS
    for column in from_table:
        np.testing.assert_array_equal(from_table[column], from_request[column], err_msg=column)
        assert from_table[column].dtype == from_request[column].dtype, column


def test_timezone_aware_timestamps_are_read_as_utc(ctr):
    aware = [{**ROWS[0], "event_time": dt.datetime(2026, 11, 21, 22, 5, 7, tzinfo=dt.timezone(dt.timedelta(hours=9)))}]
    features = ctr.features.transform(from_rows(aware, ctr.features.INPUT_SCHEMA), hash_bits=20)
    expected = ctr.features.transform(from_rows(ROWS[:1], ctr.features.INPUT_SCHEMA), hash_bits=20)
    assert features["hour"][0] == expected["hour"][0]


def test_feature_hashes_are_stable_across_processes(ctr):
    """Python's hash() is salted per process; keiko's hashing must not be."""
    here = ctr.features.transform(from_rows(ROWS, ctr.features.INPUT_SCHEMA), hash_bits=20)
    code = (
        "import datetime, json; from keiko.columns import from_rows; from keiko.modeldef import load_model;"
        f"rows = {ROWS!r}; m = load_model('ctr');"
        "f = m.features.transform(from_rows(rows, m.features.INPUT_SCHEMA), hash_bits=20);"
        "print(json.dumps({k: v.tolist() for k, v in f.items()}))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert json.loads(out) == {k: v.tolist() for k, v in here.items()}


def test_indices_stay_inside_the_hash_space(ctr):
    features = ctr.features.transform(from_rows(ROWS, ctr.features.INPUT_SCHEMA), hash_bits=8)
    assert all(((v >= 0) & (v < 256)).all() for v in features.values())
    # Different slots of the same row land in different buckets (slots are salted by name).
    assert len({int(v[0]) for v in features.values()}) > len(features) // 2
