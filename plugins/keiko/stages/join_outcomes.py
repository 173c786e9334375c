"""join_outcomes: the monitored day's answers joined with what happened after them.

Renders include/sql/<model>/monitor.sql for the day and runs it on the warehouse: one row per member of the
day's population (the rows the model answers for), with the last answer a server logged for it (version, score
and the inputs it read; NULL when none was logged) and its outcome. The rows go to the monitor run's
online.parquet, which the monitor's gates judge.
"""

from __future__ import annotations

import numpy as np
import pyarrow.compute as pc

from keiko.config import PREDICTIONS_TABLE
from keiko.contract import JoinOutcomesResult
from keiko.errors import KeikoError, MissingDataError
from keiko.metrics import logloss
from keiko.serving.prediction_log import IDENTIFIERS
from keiko.serving.split import FALLBACK
from keiko.stages.context import StageContext
from keiko.stages.evaluate import true_probabilities
from keiko.warehouse import render_monitor_sql

OUTCOME, VERSION, SCORE = "outcome", "version", "score"  # monitor.sql's columns the gates read by name


def check_prediction_log_is_in_the_warehouse(ctx: StageContext) -> None:
    """On DuckDB the warehouse reads `predictions` under its own folder: a log written elsewhere is not seen."""
    config = ctx.settings
    if config.warehouse == "duckdb":
        expected = (config.warehouse_dir / PREDICTIONS_TABLE).as_uri()
        if config.prediction_log_url != expected:
            raise KeikoError(
                f"KEIKO_PREDICTION_LOG_URL is {config.prediction_log_url}, outside the DuckDB warehouse: the monitor "
                f"reads the table {PREDICTIONS_TABLE} at {expected} (unset KEIKO_PREDICTION_LOG_URL)"
            )
    if PREDICTIONS_TABLE not in ctx.warehouse.tables():
        raise MissingDataError(
            f"no {PREDICTIONS_TABLE} table in {ctx.warehouse.describe()}: no model server has logged an answer "
            f"(model.yaml serving.prediction_log.enabled, and the servers' /metrics keiko_prediction_log_rows_total)"
        )


def run(ctx: StageContext) -> JoinOutcomesResult:
    inputs = [field for field in ctx.model.request_schema if field not in IDENTIFIERS]  # logged beside them
    sql = render_monitor_sql(ctx.model.monitor_sql_path, day=ctx.ds, model=ctx.model.name, inputs=inputs)
    ctx.store.write_bytes(ctx.layout.monitor_sql, sql.encode())
    check_prediction_log_is_in_the_warehouse(ctx)
    # The outcome tables' partitions of the day (the sensors waited for them); the log's are served days.
    ctx.warehouse.check_window(sql, ctx.ds, ctx.ds, unchecked=frozenset({PREDICTIONS_TABLE}))
    ctx.log(f"join_outcomes {ctx.model.name} {ctx.ds}: running monitor.sql on {ctx.warehouse.describe()}")
    table = ctx.warehouse.query(sql)
    if table.num_rows == 0:
        raise MissingDataError(f"monitor.sql returned no rows for {ctx.ds}: the day's population is empty")

    versions = table.column(VERSION)
    answered = table.filter(pc.is_valid(versions))
    values, numbers = np.unique(answered.column(VERSION).to_numpy(), return_counts=True)
    counts = {str(v): int(n) for v, n in zip(values, numbers, strict=True)}
    outcomes = int(pc.sum(table.column(OUTCOME)).as_py() or 0)
    bayes = None
    if (
        answered.num_rows
        and (p_true := true_probabilities(ctx, answered.column(ctx.model.config.row_id).to_numpy(), ctx.ds)) is not None
    ):
        bayes = logloss(answered.column(OUTCOME).to_numpy(), p_true)
    sha256 = ctx.store.write_table(ctx.layout.online, table)
    shares = ", ".join(f"v{v} {n / max(answered.num_rows, 1):.1%}" for v, n in counts.items()) or "none"
    ctx.log(
        f"join_outcomes {ctx.model.name} {ctx.ds}: {table.num_rows:,} in the population, {answered.num_rows:,} "
        f"answered ({answered.num_rows / table.num_rows:.2%}; by version: {shares}), {outcomes:,} outcomes"
    )
    fallbacks = int(pc.sum(pc.equal(answered.column("variant"), FALLBACK)).as_py() or 0)
    if ctx.model.config.serving.batch is not None:
        share = fallbacks / max(answered.num_rows, 1)
        ctx.log(f"{fallbacks:,} of the answers fell back ({share:.2%}): keys the batch lacked, or it had expired")
    return JoinOutcomesResult(
        fallbacks=fallbacks,
        day=ctx.ds.isoformat(),
        online_uri=ctx.layout.online,
        online_sha256=sha256,
        population=table.num_rows,
        answered=answered.num_rows,
        outcomes=outcomes,
        versions=counts,
        bayes_optimal_logloss=bayes,
    )
