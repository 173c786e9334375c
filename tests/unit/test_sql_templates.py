"""Every extract template is valid Trino (what Athena runs) and runs on DuckDB (what the embedded default runs).

Templates are found by glob, so a new model's SQL is checked without touching this file. sqlglot's
Trino reader is lenient: it accepts some DuckDB-only syntax (`SELECT * EXCLUDE (...)`, `x::int`,
`FROM t SELECT ...`), so passing here is a floor, not proof that Athena accepts a template.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pyarrow as pa
import pytest
import sqlglot
from sqlglot.errors import ErrorLevel, ParseError

from conftest import END_DATE, ROOT
from keiko.modeldef import load_model
from keiko.warehouse import DuckDBWarehouse, render_sql

TEMPLATES = sorted((ROOT / "include" / "sql").glob("*/extract.sql"))


def check_template(path: Path, warehouse: DuckDBWarehouse, *, model: str, window_days: int, label: str) -> pa.Table:
    """Rendered for END_DATE: parses as Trino, runs on DuckDB, returns rows with the label column."""
    sql = render_sql(path, ds=END_DATE, window_days=window_days, model=model)
    sqlglot.parse_one(sql, read="trino", error_level=ErrorLevel.RAISE)
    table = warehouse.query(sql)
    assert label in table.column_names, f"{path}: no label column {label!r} in {table.column_names}"
    assert table.num_rows > 0, f"{path}: no rows for {END_DATE}"
    return table


def test_every_model_with_a_model_yaml_has_its_sql_checked():
    models = {p.name for p in (ROOT / "include" / "models").iterdir() if (p / "model.yaml").is_file()}
    assert models and models <= {p.parent.name for p in TEMPLATES}


@pytest.mark.parametrize("path", TEMPLATES, ids=[f"{p.parent.name}/{p.name}" for p in TEMPLATES])
def test_template_is_trino_and_runs_on_duckdb(path, warehouse_dir):
    model = load_model(path.parent.name)
    table = check_template(
        path,
        DuckDBWarehouse(warehouse_dir),
        model=model.name,
        window_days=model.config.window_days,
        label=model.config.label,
    )
    days = set(table.column("dt").to_pylist()) if "dt" in table.column_names else set()
    assert days <= {(END_DATE - dt.timedelta(days=i)).isoformat() for i in range(model.config.window_days)}


def test_duckdb_only_syntax_fails_the_trino_parse(tmp_path, warehouse_dir):
    """QUALIFY runs on DuckDB but is not Trino (Athena rejects it): the check above must catch it."""
    template = tmp_path / "extract.sql"
    template.write_text(
        "SELECT dt, impression_id, 0 AS clicked FROM clicks WHERE dt = '{{ ds }}'\n"
        "QUALIFY row_number() OVER (PARTITION BY impression_id ORDER BY click_time) = 1\n"
    )
    warehouse = DuckDBWarehouse(warehouse_dir)
    assert warehouse.query(render_sql(template, ds=END_DATE, window_days=3, model="x")).num_rows > 0
    with pytest.raises(ParseError):
        check_template(template, warehouse, model="x", window_days=3, label="clicked")
