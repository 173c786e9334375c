import datetime as dt

import pyarrow as pa
import pyarrow.parquet as pq

from conftest import DS, END_DATE, ROWS_PER_DAY, run_steps
from keiko.modeldef import load_model
from keiko.stages.features import split_masks
from keiko.synth import daily_rows

WINDOW_DAYS = load_model("ctr").config.window_days


def test_split_is_by_time_with_the_last_day_as_test():
    days = pa.array(["2026-11-19", "2026-11-20", "2026-11-21", "2026-11-18"])
    masks = split_masks(days, dt.date(2026, 11, 21))
    assert masks["test"].tolist() == [False, False, True, False]
    assert masks["valid"].tolist() == [False, True, False, False]
    assert masks["train"].tolist() == [True, False, False, True]


def test_features_stage_writes_splits_and_profile(pipeline_home):
    day = pipeline_home / "artifacts" / "ctr" / DS
    test = pq.read_table(day / "test.parquet")
    train = pq.read_table(day / "train.parquet")
    assert {"label", "impression_id", "app_id", "advertiser_category_x_os"} <= set(test.column_names)
    days = [END_DATE - dt.timedelta(days=i) for i in range(WINDOW_DAYS)]
    rows = {day: daily_rows(day, ROWS_PER_DAY, seed=7) for day in days}
    assert test.num_rows == rows[END_DATE]
    assert train.num_rows == sum(n for day, n in rows.items() if day < END_DATE - dt.timedelta(days=1))
    assert not set(test.column("impression_id").to_pylist()) & set(train.column("impression_id").to_pylist())
    import json

    profile = json.loads((day / "profile.json").read_text())
    assert profile["columns"]["os"]["distinct"] == 2
    assert len(profile["columns"]["floor_price"]["quantiles"]) == 21
    assert 0.01 < profile["label_rate"]["train"] < 0.06


def test_rerun_produces_identical_artifacts(run_home):
    day = run_home / "artifacts" / "ctr" / DS
    before = {name: (day / name).read_bytes() for name in ("raw.parquet", "train.parquet", "model.npz")}
    run_steps("extract", "features", "train")  # gates read, never write, these
    for name, content in before.items():
        assert (day / name).read_bytes() == content, name
