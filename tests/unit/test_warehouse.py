import datetime as dt

import pytest
import sqlglot

from keiko.errors import MissingDataError
from keiko.modeldef import load_model
from keiko.warehouse import DuckDBWarehouse, data_window, missing_partitions_error, referenced_tables, render_sql

DS = dt.date(2026, 11, 21)


def test_data_window_ends_with_the_run_day():
    assert data_window(DS, 7) == (dt.date(2026, 11, 15), DS)


def test_ctr_sql_renders_for_the_window_and_parses_as_trino():
    sql = render_sql(load_model("ctr").sql_path, ds=DS, window_days=7, model="ctr")
    assert "'2026-11-15'" in sql and "'2026-11-21'" in sql and "{{" not in sql
    sqlglot.parse_one(sql, read="trino")
    assert referenced_tables(sql) == {"impressions", "clicks"}


def test_extract_deduplicates_clicks_and_keeps_every_impression(warehouse_dir):
    warehouse = DuckDBWarehouse(warehouse_dir)
    sql = render_sql(load_model("ctr").sql_path, ds=DS, window_days=2, model="ctr")
    table = warehouse.query(sql)
    impressions = warehouse.query("SELECT count(*) AS n FROM impressions WHERE dt >= '2026-11-20'")
    clicked = warehouse.query("SELECT count(DISTINCT impression_id) AS n FROM clicks WHERE dt >= '2026-11-20'")
    assert table.num_rows == impressions.column("n")[0].as_py()
    assert sum(table.column("clicked").to_pylist()) == clicked.column("n")[0].as_py()


def test_missing_partitions_are_named(warehouse_dir):
    warehouse = DuckDBWarehouse(warehouse_dir)
    sql = render_sql(load_model("ctr").sql_path, ds=dt.date(2026, 11, 23), window_days=7, model="ctr")
    with pytest.raises(MissingDataError, match=r"clicks/dt=2026-11-22.*impressions/dt=2026-11-22"):
        warehouse.check_window(sql, dt.date(2026, 11, 17), dt.date(2026, 11, 23))


def test_missing_partitions_error_names_five_and_counts_the_rest():
    missing = [f"impressions/dt=2026-11-{day}" for day in range(10, 18)]
    error = missing_partitions_error(missing, "/w", dt.date(2026, 11, 10), dt.date(2026, 11, 17), "run `keiko synth`")
    assert str(error) == (
        "missing warehouse partitions in /w: impressions/dt=2026-11-10, impressions/dt=2026-11-11, "
        "impressions/dt=2026-11-12, impressions/dt=2026-11-13, impressions/dt=2026-11-14 and 3 more "
        "(data window 2026-11-10..2026-11-17; run `keiko synth`)"
    )
