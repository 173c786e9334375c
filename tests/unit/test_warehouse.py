import datetime as dt
import shutil
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import sqlglot

from keiko.errors import KeikoError, MissingDataError
from keiko.modeldef import load_model
from keiko.warehouse import (
    DuckDBWarehouse,
    data_window,
    missing_partitions_error,
    quote_identifier,
    referenced_tables,
    render_sql,
    view_sql,
)

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


# -- table folders: which are tables, which are ignored, which are refused (keiko.warehouse) ----------------

INJECTIONS = [
    "x AS SELECT 1; COPY (SELECT 42) TO 'pwned.csv'; --",
    "x\" AS SELECT 1; COPY (SELECT 42) TO 'pwned.csv'; --",  # breaks out of a double-quoted identifier
    "x AS SELECT 1; COPY (SELECT 42) TO 'pwned.csv' (FORMAT csv); SELECT 1 AS y",
    "impressions\n",  # a trailing newline that `$` in a pattern would let through
    "Impressions",  # Glue's table names are lowercase
    "1day",
    "click-log",
]


def small_warehouse(directory: Path) -> Path:
    """A warehouse with one table, `impressions`, of one day (two rows)."""
    partition = directory / "impressions" / "dt=2026-11-21"
    partition.mkdir(parents=True)
    pq.write_table(pa.table({"impression_id": [1, 2]}), partition / "part-0.parquet")
    return directory


def files_under(*directories: Path) -> set[Path]:
    return {path for directory in directories for path in directory.rglob("*") if path.is_file()}


@pytest.mark.parametrize("name", INJECTIONS)
@pytest.mark.parametrize("with_partition", [False, True])
def test_a_folder_that_is_no_table_name_is_refused_and_nothing_of_it_runs(name, with_partition, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # where a COPY ... TO 'pwned.csv' would land
    warehouse_dir = small_warehouse(tmp_path / "warehouse")
    if with_partition:  # a folder with data, as a real table would have
        small_warehouse(tmp_path / "other")
        shutil.copytree(tmp_path / "other" / "impressions", warehouse_dir / name)
    else:
        (warehouse_dir / name).mkdir()
    before = files_under(tmp_path)
    warehouse = DuckDBWarehouse(warehouse_dir)
    with pytest.raises(KeikoError) as refused:
        warehouse.query("SELECT count(*) AS n FROM impressions")
    assert str(refused.value) == (
        f"warehouse folder {name!r} in {warehouse_dir} is not a table name (lowercase letters, digits and _, "
        "starting with a letter): rename it, or move it out of the warehouse"
    )
    assert "\n" not in str(refused.value)
    assert files_under(tmp_path) == before  # no pwned.csv in the working directory, the warehouse or beside it


@pytest.mark.parametrize(
    "name", [".git", ".x AS SELECT 1; COPY (SELECT 42) TO 'pwned.csv'; --", "_temporary", "lost+found"]
)
def test_hidden_folders_and_lost_found_are_ignored(name, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    warehouse_dir = small_warehouse(tmp_path / "warehouse")
    (warehouse_dir / name / "dt=2026-11-21").mkdir(parents=True)
    (warehouse_dir / name / "dt=2026-11-21" / "part-0.parquet").write_bytes(b"not parquet")
    before = files_under(tmp_path)
    warehouse = DuckDBWarehouse(warehouse_dir)
    assert warehouse.tables() == ["impressions"]
    assert warehouse.query("SELECT count(*) AS n FROM impressions").column("n").to_pylist() == [2]
    assert files_under(tmp_path) == before


def test_a_table_folder_without_partitions_is_no_table_yet_and_reading_it_names_what_is_missing(tmp_path):
    warehouse_dir = small_warehouse(tmp_path / "warehouse")
    (warehouse_dir / "clicks").mkdir()
    (warehouse_dir / "README").write_text("files beside the tables are not tables either")
    warehouse = DuckDBWarehouse(warehouse_dir)
    assert warehouse.tables() == ["impressions"]
    sql = "SELECT * FROM clicks WHERE dt BETWEEN '2026-11-21' AND '2026-11-21'"
    with pytest.raises(MissingDataError, match=r"clicks/dt=2026-11-21"):
        warehouse.check_window(sql, dt.date(2026, 11, 21), dt.date(2026, 11, 21))


def test_view_names_are_quoted_even_past_the_name_check(tmp_path, monkeypatch):
    """Defence in depth: view_sql alone, given a name the check would refuse, creates one view of that name."""
    import duckdb

    monkeypatch.chdir(tmp_path)
    folder = small_warehouse(tmp_path / "warehouse") / "impressions"
    name = "x\" AS SELECT 1; COPY (SELECT 42) TO 'pwned.csv'; --"
    connection = duckdb.connect()
    connection.execute(view_sql(name, folder))
    assert connection.sql(f"SELECT count(*) FROM {quote_identifier(name)}").fetchall() == [(2,)]
    assert connection.sql("SELECT view_name FROM duckdb_views() WHERE NOT internal").fetchall() == [(name,)]
    assert not (tmp_path / "pwned.csv").exists()


def test_a_warehouse_path_with_quotes_and_glob_characters_reads_its_own_files(tmp_path):
    warehouse_dir = small_warehouse(tmp_path / "it's [a] *dir?" / "warehouse")
    decoy = small_warehouse(tmp_path / "it's a dirs" / "warehouse")  # what the path would match as a glob
    pq.write_table(pa.table({"impression_id": [3, 4, 5]}), decoy / "impressions" / "dt=2026-11-21" / "part-0.parquet")
    warehouse = DuckDBWarehouse(warehouse_dir)
    assert warehouse.query("SELECT count(*) AS n FROM impressions").column("n").to_pylist() == [2]
