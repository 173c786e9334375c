"""Request values outside what training saw are counted per field: judged against the training profile the
features stage writes (a string or int's set of values, a float's range)."""

import datetime as dt
import json

import pyarrow as pa

from keiko import profiling
from keiko.columns import from_arrow
from keiko.serving.unseen import OUT_OF_RANGE, UNSEEN_CATEGORY, UnseenValues

SCHEMA = {"event_time": "timestamp", "os": "str", "position": "int", "app_id": "int", "floor_price": "float"}


def training_profile(app_ids: list[int]) -> dict:
    """profile.json's `columns` as the features stage writes it (warehouse columns, through JSON)."""
    n = len(app_ids)
    table = pa.table(
        {
            "event_time": pa.array([dt.datetime(2026, 11, 20, 12)] * n, pa.timestamp("us", tz="UTC")),
            "os": pa.array((["ios", "android"] * n)[:n]).dictionary_encode(),
            "position": pa.array(([1, 2, 3] * n)[:n], pa.int64()),
            "app_id": pa.array(app_ids, pa.int64()),
            "floor_price": pa.array([0.5 + i / n for i in range(n)], pa.float64()),
        }
    )
    return json.loads(json.dumps({"columns": profiling.profile(from_arrow(table, SCHEMA), SCHEMA)}))


def row(**values) -> dict:
    return {
        "event_time": dt.datetime(2027, 1, 1),
        "os": "ios",
        "position": 2,
        "app_id": 10,
        "floor_price": 1.0,
    } | values


def test_values_training_never_saw_are_counted_per_field_and_kind():
    unseen = UnseenValues.from_profile(training_profile([10, 11, 12, 13]), SCHEMA)
    unseen.count([row(), row(os="windows", position=7), row(app_id=99, floor_price=1.6), row(floor_price=0.4)])
    assert unseen.rows == 4
    assert unseen.counts == {
        ("os", UNSEEN_CATEGORY): 1,
        ("position", UNSEEN_CATEGORY): 1,
        ("app_id", UNSEEN_CATEGORY): 1,
        ("floor_price", OUT_OF_RANGE): 2,  # 1.6 above training's max (1.25), 0.4 below its min (0.5)
    }
    assert unseen.unjudged == {"event_time": "a timestamp: requests always come after training"}


def test_an_int_field_with_too_many_values_to_list_is_judged_by_its_range(monkeypatch):
    monkeypatch.setattr(profiling, "MAX_SEEN_VALUES", 3)
    unseen = UnseenValues.from_profile(training_profile([10, 11, 12, 13]), SCHEMA)
    unseen.count([row(app_id=11), row(app_id=12), row(app_id=14), row(app_id=9)])
    assert unseen.counts["app_id", OUT_OF_RANGE] == 2
    assert ("app_id", UNSEEN_CATEGORY) not in unseen.counts
    assert unseen.counts["position", UNSEEN_CATEGORY] == 0  # 3 distinct values: still listed


def test_a_profile_from_before_seen_values_leaves_fields_unjudged():
    old = training_profile([10, 11])
    for column in old["columns"].values():
        for key in ("seen", "min", "max"):
            column.pop(key, None)
    unseen = UnseenValues.from_profile(old, SCHEMA)
    unseen.count([row(os="windows")])
    assert unseen.rows == 1 and unseen.counts == {}
    assert "not in the training profile" in unseen.unjudged["os"]
