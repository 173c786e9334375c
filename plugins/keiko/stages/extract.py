"""extract: render the model's SQL for the run's data window and run it on the warehouse."""

from __future__ import annotations

from keiko.stages.context import StageContext
from keiko.warehouse import render_sql


def run(ctx: StageContext) -> dict:
    start, end = ctx.window
    sql = render_sql(ctx.model.sql_path, ds=ctx.ds, window_days=ctx.model.config.window_days, model=ctx.model.name)
    ctx.log(f"extract {ctx.model.name}: data window {start}..{end} on {ctx.warehouse.describe()}")
    ctx.warehouse.check_window(sql, start, end)
    table = ctx.warehouse.query(sql)
    ctx.log(
        f"query returned {table.num_rows:,} rows x {table.num_columns} columns ({table.nbytes / 1e6:,.0f} MB in memory)"
    )
    raw_uri = ctx.uri("raw.parquet")
    sha256 = ctx.store.write_table(raw_uri, table)
    ctx.store.write_bytes(ctx.uri("extract.sql"), sql.encode())
    return {
        "raw_uri": raw_uri,
        "raw_sha256": sha256,
        "rows": table.num_rows,
        "window_start": start.isoformat(),
        "window_end": end.isoformat(),
    }
