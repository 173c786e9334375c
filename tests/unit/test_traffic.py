"""keiko traffic's world changes and requests, without servers (tests/integration/test_traffic.py has them)."""

import datetime as dt
import json

import numpy as np
import pytest

from keiko.errors import KeikoError
from keiko.synth import GROWING_APP, World, WorldChange, generate_day
from keiko.traffic import Shift, in_force, record_shifts, recorded_shifts, requests, world_change

DAY = dt.date(2026, 11, 22)
WORLD = World.from_seed(7)


@pytest.mark.parametrize(
    "text, message",
    [
        ("click-rate", "expected KIND=VALUE"),
        ("clickrate=0.2", "KIND one of click-rate, app-share, encoding"),
        ("click-rate=lots", "'lots' is not a number"),
        ("click-rate=-1", "a fraction above -1"),
        ("app-share=1.5", "between 0 and 1"),
        ("encoding=rot13", "encodings are upper, or off"),
    ],
)
def test_a_shift_that_cannot_be_read_is_refused_naming_what_is_wrong(text, message):
    with pytest.raises(KeikoError, match=message):
        Shift.parse(text, DAY)


def test_a_shift_holds_from_its_day_until_one_of_its_kind_replaces_it(tmp_path):
    record_shifts(tmp_path, [Shift.parse("click-rate=0.2", DAY), Shift.parse("encoding=upper", DAY)])
    record_shifts(tmp_path, [Shift.parse("click-rate=0", DAY + dt.timedelta(days=3))])
    shifts = recorded_shifts(tmp_path)
    assert in_force(shifts, DAY - dt.timedelta(days=1)) == {}
    assert in_force(shifts, DAY + dt.timedelta(days=2)) == {"click-rate": 0.2, "encoding": "upper"}
    assert in_force(shifts, DAY + dt.timedelta(days=3)) == {"encoding": "upper"}  # click-rate=0: undone
    # The same kind on the same day again replaces the record, not adds to it.
    record_shifts(tmp_path, [Shift.parse("click-rate=0.5", DAY)])
    assert in_force(recorded_shifts(tmp_path), DAY + dt.timedelta(days=1))["click-rate"] == 0.5


def test_a_click_rate_change_moves_the_true_rate_and_leaves_the_impressions_as_they_were():
    before = generate_day(WORLD, DAY, 20_000, 7)
    after = generate_day(WORLD, DAY, 20_000, 7, WorldChange(click_rate=0.5))
    assert after["impressions"].equals(before["impressions"])  # the same auctions
    ratio = np.mean(after["truth"]["p_click"].to_numpy()) / np.mean(before["truth"]["p_click"].to_numpy())
    assert ratio == pytest.approx(1.5, rel=1e-3)
    clicked = [len(set(t["clicks"]["impression_id"].to_pylist())) for t in (before, after)]
    assert 1.35 < clicked[1] / clicked[0] < 1.65  # ~500 clicks: the count follows, within its noise


def test_an_app_share_change_gives_that_app_its_share_of_the_traffic():
    day = generate_day(WORLD, DAY, 20_000, 7, world_change({"app-share": 0.2}))
    apps = day["impressions"]["app_id"].to_numpy() - 1000  # synth's app ids start at 1000
    assert WORLD.app_share[GROWING_APP] < 0.02
    assert np.mean(apps == GROWING_APP) == pytest.approx(0.2, abs=0.01)


def test_requests_carry_the_ids_and_only_the_encoding_change_alters_what_is_sent():
    impressions = generate_day(WORLD, DAY, 5, 7)["impressions"]
    schema = {"event_time": "timestamp", "os": "str", "app_id": "int"}
    plain = [json.loads(b) for b in requests(impressions, schema, None, DAY)]
    upper = [json.loads(b) for b in requests(impressions, schema, "upper", DAY)]
    assert [b["request_id"] for b in plain] == [f"traffic-{DAY}-{n}" for n in range(5)]
    (row,) = plain[0]["rows"]
    assert set(row) == {"impression_id", "user_id", "event_time", "os", "app_id"}
    assert row["impression_id"] == impressions["impression_id"][0].as_py()
    assert row["os"] in ("ios", "android") and upper[0]["rows"][0]["os"] == row["os"].upper()
    assert {k: v for k, v in upper[0]["rows"][0].items() if k != "os"} == {k: v for k, v in row.items() if k != "os"}
