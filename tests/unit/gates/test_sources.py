"""gate_raw at the source grain: each source partition validated once per content, rewritten days again."""

from __future__ import annotations

import datetime as dt
import json
import shutil

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from conftest import DS, END_DATE
from keiko.cli import main
from keiko.contract import PartitionAggregates
from keiko.gates.sources import SourcePartition, across_days, aggregates, undeclared_reads, verdict_key
from keiko.modeldef import load_model
from keiko.process import EXIT_GATE_FAILED, EXIT_USER_ERROR
from keiko.warehouse import DuckDBWarehouse

CTR = load_model("ctr").config
WINDOW = [(END_DATE - dt.timedelta(days=n)).isoformat() for n in range(CTR.window_days - 1, -1, -1)]
EVERY_PARTITION = [f"{table}/dt={day}" for table in CTR.sources for day in WINDOW]


def gate_raw() -> int:
    return main(["gate", "raw", "--model", "ctr", "--ds", DS])


def raw_result(home) -> dict:
    return json.loads((home / "artifacts" / "ctr" / DS / "gates" / "raw.json").read_text())


def failed(result: dict) -> list[tuple[str, str, str]]:
    return [(o["suite"], o["expectation"], o["column"]) for o in result["outcomes"] if not o["passed"]]


@pytest.fixture
def warehouse(run_home, warehouse_dir, tmp_path, monkeypatch):
    """A private copy of the session warehouse that run_home's gate_raw already validated."""
    copy = tmp_path / "warehouse"
    shutil.copytree(warehouse_dir, copy)
    monkeypatch.setenv("KEIKO_WAREHOUSE_DIR", str(copy))
    return copy


def rewrite(warehouse, table: str, day: str, change) -> None:
    (path,) = (warehouse / table / f"dt={day}").glob("*.parquet")
    pq.write_table(change(pq.read_table(path)), path)


def set_column(table: pa.Table, name: str, values) -> pa.Table:
    return table.set_column(table.schema.get_field_index(name), name, values)


def test_an_unchanged_window_reuses_every_verdict(run_home, warehouse, capsys):
    assert raw_result(run_home)["validated_partitions"] == EVERY_PARTITION  # the pipeline's run judged them
    assert gate_raw() == 0
    result = raw_result(run_home)
    assert result["validated_partitions"] == [] and result["reused_partitions"] == EVERY_PARTITION
    assert f"{len(EVERY_PARTITION)} source partitions in the window: 0 to validate" in capsys.readouterr().out


@pytest.mark.parametrize(
    "change, suite, expectation, column",
    [
        (lambda t: set_column(t, "os", pc.replace_substring(t["os"], "ios", "iOS")), "impressions", "in_set", "os"),
        (
            lambda t: set_column(t, "floor_price", pc.multiply(t["floor_price"], 100.0)),
            "impressions.ranges",
            "be_between",
            "floor_price",
        ),
    ],
    ids=["unknown category", "unit x100"],
)
def test_a_rewritten_day_is_validated_again_and_fails(run_home, warehouse, capsys, change, suite, expectation, column):
    day = WINDOW[2]  # validated by the pipeline's run, then rewritten upstream
    rewrite(warehouse, "impressions", day, change)
    capsys.readouterr()

    assert gate_raw() == EXIT_GATE_FAILED
    result = raw_result(run_home)
    # The clicks that resolve their impressions in it (that day's and the next) are judged again too.
    again = [f"impressions/dt={day}", f"clicks/dt={day}", f"clicks/dt={WINDOW[3]}"]
    assert result["validated_partitions"] == again
    assert result["reused_partitions"] == [p for p in EVERY_PARTITION if p not in again]
    assert any(s == f"{suite} dt={day}" and expectation in e and c == column for s, e, c in failed(result))
    log = capsys.readouterr().out
    assert any(f"{suite} dt={day}" in line and expectation in line and column in line for line in log.splitlines())

    # The same content again: its failed verdict is reused, not judged again, and still fails the run.
    assert gate_raw() == EXIT_GATE_FAILED
    again = raw_result(run_home)
    assert again["validated_partitions"] == [] and failed(again) == failed(result)


def test_a_rewritten_click_log_revalidates_that_partition_only(run_home, warehouse):
    day = WINDOW[-1]
    rewrite(warehouse, "clicks", day, lambda t: pa.concat_tables([t, t]))  # the day's click log landed twice
    assert gate_raw() == EXIT_GATE_FAILED
    result = raw_result(run_home)
    assert result["validated_partitions"] == [f"clicks/dt={day}"]
    assert failed(result) == [(f"clicks dt={day}", "expect_compound_columns_to_be_unique", "impression_id,click_time")]


def test_a_model_adds_its_own_expectations_from_json(run_home, warehouse):
    result = raw_result(run_home)  # include/models/ctr/expectations/raw.impressions.json: on each impressions day
    added = [o for o in result["outcomes"] if o["expectation"] == "expect_column_median_to_be_between"]
    assert [(o["suite"], o["column"], o["passed"]) for o in added] == [
        (f"impressions dt={day}", "floor_price", True) for day in WINDOW
    ]
    rewrite(warehouse, "impressions", DS, lambda t: set_column(t, "floor_price", pc.add(t["floor_price"], 3.0)))
    assert gate_raw() == EXIT_GATE_FAILED
    assert failed(raw_result(run_home)) == [
        (f"impressions dt={DS}", "expect_column_median_to_be_between", "floor_price")  # +3 USD stays in range
    ]


def test_sql_reading_an_undeclared_column_is_refused(run_home, project_copy, capsys):
    sql = project_copy / "include" / "sql" / "ctr" / "extract.sql"
    sql.write_text(sql.read_text().replace("    i.floor_price,", "    i.floor_price,\n    i.bid_price,"))
    assert main(["stage", "extract", "--model", "ctr", "--ds", DS]) == 0
    capsys.readouterr()
    assert gate_raw() == EXIT_USER_ERROR
    err = capsys.readouterr().err
    assert "sources: does not match what the extract SQL reads: impressions.bid_price" in err, err


# -- pure parts, on small data ----------------------------------------------------------------------------


SQL = """
WITH clicked AS (SELECT DISTINCT impression_id FROM clicks WHERE dt = '2026-11-21')
SELECT i.dt, i.event_time, i.os, CASE WHEN c.impression_id IS NULL THEN 0 ELSE 1 END AS clicked
FROM impressions AS i LEFT JOIN clicked AS c ON i.impression_id = c.impression_id
"""


def test_every_table_and_column_the_sql_reads_must_be_declared():
    assert undeclared_reads(CTR.sources, SQL) == []  # a subset of ctr's declared columns
    assert undeclared_reads(CTR.sources, SQL.replace("i.os", "i.os, i.bid_price")) == ["impressions.bid_price"]
    assert undeclared_reads(CTR.sources, SQL.replace("FROM clicks", "FROM taps")) == [
        "taps.impression_id",
        "clicks (declared, not read)",
    ]


def day_rows(day: dt.date, rows: int, seed: int, floor=None) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    start = pd.Timestamp(day)
    return pd.DataFrame(
        {
            "event_time": start + pd.to_timedelta(rng.integers(0, 86_400, rows), unit="s"),
            "impression_id": np.arange(rows),
            "os": rng.choice(["android", "ios"], rows),
            "floor_price": floor if floor is not None else rng.random(rows),
        }
    )


def test_aggregates_are_hour_shares_and_top_value_shares():
    spec = CTR.sources["impressions"]
    frame = day_rows(END_DATE, 6_000, 0, floor=np.where(np.arange(6_000) < 1_500, 0.01, np.arange(6_000) / 6_000))
    result = aggregates(frame, spec)
    assert result.rows == 6_000 and len(result.hour_shares) == 24 and sum(result.hour_shares) == pytest.approx(1)
    assert result.top_shares["floor_price"] == pytest.approx(0.25)  # a quarter of the rows on one default
    assert set(result.top_shares) == {"os", "floor_price"}  # declared columns present; not keys or times


def test_across_days_flags_the_one_day_that_differs_from_the_others():
    spec = CTR.sources["impressions"]
    days = [END_DATE - dt.timedelta(days=n) for n in range(7, -1, -1)]
    by_day = {d.isoformat(): aggregates(day_rows(d, 6_000, n), spec) for n, d in enumerate(days)}
    collapsed = by_day[days[3].isoformat()]
    by_day[days[3].isoformat()] = collapsed.model_copy(update={"top_shares": {**collapsed.top_shares, "os": 0.8}})
    night = [0.0] * 6 + [1 / 18] * 18  # nothing before 06:00
    by_day[days[5].isoformat()] = by_day[days[5].isoformat()].model_copy(update={"hour_shares": night})
    by_day["tiny"] = PartitionAggregates(rows=10, hour_shares=[1.0] + [0.0] * 23, top_shares={"os": 1.0})

    frame = across_days("impressions", spec, by_day, CTR.gates.raw).frame.set_index("dt")
    band, distance = CTR.gates.raw.top_share_max_change, CTR.gates.raw.hour_profile_max_distance
    outside = frame["top share change: os"].abs() > band
    assert list(frame.index[outside]) == [days[3].isoformat()]
    assert list(frame.index[frame["hour profile distance"] > distance]) == [days[5].isoformat()]
    assert frame.loc["tiny"].drop("rows").isna().all()  # too few rows to compare: not judged


def test_a_verdict_key_follows_the_partition_its_references_and_the_suite():
    sources = CTR.sources
    clicks = SourcePartition("clicks", END_DATE, sources["clicks"], sources)
    before = END_DATE - dt.timedelta(days=1)
    contents = {("clicks", END_DATE): "a", ("impressions", END_DATE): "b", ("impressions", before): "c"}
    key = verdict_key(clicks, contents, {})
    assert verdict_key(clicks, dict(contents), {}) == key  # derived, stable
    assert verdict_key(clicks, {**contents, ("clicks", END_DATE): "a2"}, {}) != key  # its own rewrite
    assert verdict_key(clicks, {**contents, ("impressions", before): "c2"}, {}) != key  # the day before's
    assert verdict_key(clicks, {**contents, ("impressions", END_DATE - dt.timedelta(days=2)): "x"}, {}) == key
    import great_expectations.expectations as gxe

    extra = {"clicks": [gxe.ExpectColumnToExist(column="click_time")]}
    assert verdict_key(clicks, contents, extra) != key  # the model's own expectations are part of the suite


def test_a_partitions_fingerprint_changes_with_its_bytes(tmp_path):
    partition = tmp_path / "clicks" / "dt=2026-11-21"
    partition.mkdir(parents=True)
    warehouse = DuckDBWarehouse(tmp_path)
    assert warehouse.partition_fingerprint("clicks", END_DATE) is None
    pq.write_table(pa.table({"impression_id": [1, 2]}), partition / "part-0.parquet")
    first = warehouse.partition_fingerprint("clicks", END_DATE)
    assert first and warehouse.partition_fingerprint("clicks", END_DATE) == first
    pq.write_table(pa.table({"impression_id": [1, 3]}), partition / "part-0.parquet")
    assert warehouse.partition_fingerprint("clicks", END_DATE) not in (None, first)
