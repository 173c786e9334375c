import datetime as dt
import hashlib

import numpy as np
import pyarrow.parquet as pq

from conftest import kill_a_writer_mid_write
from keiko.metrics import logloss
from keiko.synth import World, daily_rows, generate_day, partition_path, write_warehouse

DAY = dt.date(2026, 11, 21)


def _digest(directory, table, day):
    return hashlib.sha256(partition_path(directory, table, day).read_bytes()).hexdigest()


def test_same_arguments_write_the_same_bytes(tmp_path):
    for name in ("a", "b"):
        write_warehouse(tmp_path / name, DAY, 2, 2_000, seed=3, progress=lambda _m: None)
    for table in ("impressions", "clicks", "conversions", "truth"):
        assert _digest(tmp_path / "a", table, DAY) == _digest(tmp_path / "b", table, DAY)


def test_a_day_does_not_depend_on_the_days_around_it(tmp_path):
    write_warehouse(tmp_path / "one", DAY, 1, 2_000, seed=3, progress=lambda _m: None)
    write_warehouse(tmp_path / "three", DAY, 3, 2_000, seed=3, progress=lambda _m: None)
    assert _digest(tmp_path / "one", "impressions", DAY) == _digest(tmp_path / "three", "impressions", DAY)


def test_seed_changes_the_data(tmp_path):
    write_warehouse(tmp_path / "a", DAY, 1, 2_000, seed=3, progress=lambda _m: None)
    write_warehouse(tmp_path / "b", DAY, 1, 2_000, seed=4, progress=lambda _m: None)
    assert _digest(tmp_path / "a", "impressions", DAY) != _digest(tmp_path / "b", "impressions", DAY)


def test_tables_follow_the_design_schema(tmp_path):
    write_warehouse(tmp_path, DAY, 1, 5_000, progress=lambda _m: None)
    impressions = pq.read_table(partition_path(tmp_path, "impressions", DAY))
    assert impressions.column_names == [
        "event_time", "impression_id", "user_id", "app_id", "media_id", "ad_id", "campaign_id",
        "advertiser_category", "os", "device_model", "country", "position", "floor_price", "bid_price",
    ]  # fmt: skip
    assert len(set(impressions.column("impression_id").to_pylist())) == impressions.num_rows
    clicks = pq.read_table(partition_path(tmp_path, "clicks", DAY))
    assert clicks.column_names == ["impression_id", "click_time"]
    # The click log repeats some events, as real ones do: extract must deduplicate.
    assert len(set(clicks.column("impression_id").to_pylist())) < clicks.num_rows
    # The true probability lives only in the separate truth table.
    assert "p_click" not in impressions.column_names


def test_labels_follow_the_hidden_probabilities():
    tables = generate_day(World.from_seed(7), DAY, 200_000, seed=7)
    truth = tables["truth"].column("p_click").to_numpy()
    ids = tables["impressions"].column("impression_id").to_numpy()
    clicked = np.isin(ids, tables["clicks"].column("impression_id").to_numpy()).astype(float)
    assert abs(clicked.mean() - truth.mean()) < 0.002
    # The Bayes-optimal logloss beats a constant prediction by a clear margin: there is signal to learn.
    assert logloss(clicked, truth) < 0.95 * logloss(clicked, np.full_like(truth, clicked.mean()))


def test_daily_volume_has_a_weekly_cycle_around_the_mean():
    days = [DAY - dt.timedelta(days=i) for i in range(28)]
    rows = {day: daily_rows(day, 100_000, seed=7) for day in days}
    weekend = [n for day, n in rows.items() if day.weekday() >= 5]
    weekdays = [n for day, n in rows.items() if day.weekday() < 5]
    assert np.mean(weekend) > 1.05 * np.mean(weekdays)
    assert 0.95 < np.mean(list(rows.values())) / 100_000 < 1.05
    assert len(set(rows.values())) == len(rows)  # and every day differs


def test_injected_faults_change_only_their_day(tmp_path):
    other = DAY - dt.timedelta(days=1)
    faults = {DAY: ["volume-drop"], other: ["missing-day"]}
    write_warehouse(tmp_path / "clean", DAY, 3, 5_000, progress=lambda _m: None)
    write_warehouse(tmp_path / "bad", DAY, 3, 5_000, progress=lambda _m: None, faults=faults)
    first = DAY - dt.timedelta(days=2)
    assert _digest(tmp_path / "clean", "impressions", first) == _digest(tmp_path / "bad", "impressions", first)
    assert not partition_path(tmp_path / "bad", "impressions", other).exists()
    kept = pq.read_table(partition_path(tmp_path / "bad", "impressions", DAY)).num_rows
    assert 0.25 < kept / pq.read_table(partition_path(tmp_path / "clean", "impressions", DAY)).num_rows < 0.35


def test_a_rewrite_removes_the_temporary_file_a_killed_synth_left(tmp_path):
    left = kill_a_writer_mid_write(partition_path(tmp_path, "clicks", DAY))
    write_warehouse(tmp_path, DAY, 1, 2_000, seed=3, progress=lambda _m: None)
    assert not left.exists()
    assert sorted(p.name for p in partition_path(tmp_path, "clicks", DAY).parent.iterdir()) == ["part-0.parquet"]
