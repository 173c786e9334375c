"""extract: render the model's SQL for the run's data window and run it on the warehouse."""

from __future__ import annotations

from keiko.contract import ExtractResult
from keiko.stages.context import StageContext
from keiko.warehouse import render_sql


def run(ctx: StageContext) -> ExtractResult:
    start, end = ctx.window
    sql = render_sql(ctx.model.sql_path, ds=ctx.ds, window_days=ctx.model.config.window_days, model=ctx.model.name)
    ctx.log(f"extract {ctx.model.name}: data window {start}..{end} on {ctx.warehouse.describe()}")
    ctx.warehouse.check_window(sql, start, end)
    table = ctx.warehouse.query(sql)
    ctx.log(
        f"query returned {table.num_rows:,} rows x {table.num_columns} columns ({table.nbytes / 1e6:,.0f} MB in memory)"
    )
    sha256 = ctx.store.write_table(ctx.layout.raw, table)
    ctx.store.write_bytes(ctx.layout.extract_sql, sql.encode())
    return ExtractResult(
        raw_uri=ctx.layout.raw,
        raw_sha256=sha256,
        rows=table.num_rows,
        window_start=start.isoformat(),
        window_end=end.isoformat(),
    )
