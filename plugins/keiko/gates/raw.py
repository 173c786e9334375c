"""gate_raw: the source tables at their own grain, each warehouse day once; then the extract's schema, what
every extracted row must hold, and every day's volume and label rate.

Each source partition of the window (keiko.gates.sources) is validated row by row once per content: its
verdict is kept in the artifact store under a key of what it was judged on, and every later run whose window
holds the same partition reuses it. A rewritten partition (late data, a backfill) has a new key and is
validated again. Every run then compares every day of the window with the others on the aggregates the
verdicts keep, and judges the extract without a pandas copy of it: its schema, its nulls (from the Parquet
footer), repeated keys and values outside the accepted sets (from those columns), and each day's volume and
label rate.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from keiko.contract import ModelLayout, PartitionAggregates, PartitionVerdict, RawGateResult
from keiko.errors import ModelConfigError
from keiko.gates.frames import TYPE_NAMES, to_frame
from keiko.gates.runner import Validation, model_expectations, report, run_validations
from keiko.gates.sources import SourcePartition, across_days, undeclared_reads, verdict_key
from keiko.phases import phase
from keiko.stages.context import StageContext
from keiko.warehouse import days_between

HISTORY_DAYS = 28
EXTRACT_SUITES = ("schema", "window", "daily")


def required_columns(ctx: StageContext) -> dict[str, str]:
    schema = dict(ctx.model.features.INPUT_SCHEMA)
    return {
        "dt": "str",
        **{key: "int" for key in ctx.model.config.gates.raw.keys},
        **schema,
        ctx.model.config.label: "int",
    }


def daily_volume(table: pa.Table, label: str) -> pd.DataFrame:
    """Each day's rows and label rate (the mean of the non-null labels), grouped in Arrow: pandas spent
    0.6 s turning 8M day strings into a frame to group them."""
    grouped = (
        table.filter(pc.is_valid(table["dt"]))
        .group_by("dt")
        .aggregate([(label, "count", pc.CountOptions(mode="all")), (label, "mean")])
    )
    daily = grouped.rename_columns({f"{label}_count": "rows", f"{label}_mean": "label_rate"}).sort_by("dt")
    return to_frame(daily.select(["dt", "rows", "label_rate"]))


def earlier_daily_counts(ctx: StageContext) -> dict[str, int]:
    """Row counts by day recorded by gate_raw runs that passed for earlier days (the trailing history)."""
    counts: dict[str, int] = {}
    for day, uri in ModelLayout(ctx.store, ctx.model.name).results_of_every_run(RawGateResult.TASK):
        if day < ctx.ds.isoformat() and (result := ctx.layout.read(uri, RawGateResult)).success:
            counts.update(result.daily_rows)
    oldest = (ctx.ds - dt.timedelta(days=HISTORY_DAYS)).isoformat()
    return {day: n for day, n in sorted(counts.items()) if oldest <= day < ctx.window[0].isoformat()}


def reference_volume(history: list[int], daily: pd.DataFrame) -> float:
    """The median daily row count of earlier passing runs' days and this window's days."""
    return float(np.median([*history, *daily["rows"]])) if len(daily) else 0.0


def null_count(metadata: pq.FileMetaData, column: str) -> int | None:
    """The column's nulls from the Parquet footer's statistics, None where a row group has none."""
    index = metadata.schema.names.index(column)
    counts = []
    for group in range(metadata.num_row_groups):
        statistics = metadata.row_group(group).column(index).statistics
        if statistics is None or not statistics.has_null_count:
            return None
        counts.append(statistics.null_count)
    return sum(counts)


def repeated(values: pa.ChunkedArray) -> int:
    """How many non-null values repeat an earlier one. Integer and time keys by sorting a copy: 15x faster
    than pyarrow's hash-based count_distinct on 8M int64 keys (0.27 s against 4.1 s)."""
    present = values.drop_null()
    if pa.types.is_integer(present.type) or pa.types.is_temporal(present.type):
        ordered = np.sort(present.to_numpy())
        return int(np.count_nonzero(ordered[1:] == ordered[:-1]))
    return len(present) - len(pc.unique(present))


def window_facts(ctx: StageContext, uri: str) -> tuple[pd.DataFrame, pa.Schema, pd.DataFrame | None]:
    """What every row of the extract must hold, counted without a pandas copy of it: nulls from the Parquet
    footer, repeated keys and values outside the accepted sets from those columns alone. One row, one column
    per fact; with the extract's schema, and each day's rows and label rate (None without dt or the label)."""
    config, label = ctx.model.config.gates.raw, ctx.model.config.label
    metadata = ctx.store.read_metadata(uri)
    schema = metadata.schema.to_arrow_schema()
    present = [c for c in required_columns(ctx) if c in schema.names]
    read = [c for c in dict.fromkeys([*config.keys, *config.accepted_values, "dt", label]) if c in present]
    table = ctx.store.read_table(uri, columns=read)
    facts: dict[str, int] = {}
    for column in present:
        counted = null_count(metadata, column)
        if counted is None:  # a writer without statistics: count them in the column
            counted = ctx.store.read_table(uri, columns=[column])[column].null_count
        facts[f"{column} nulls"] = counted
    for key in config.keys:
        if key in read:
            facts[f"{key} repeated"] = repeated(table[key])  # nulls are counted above, not as repeats
    for column, values in config.accepted_values.items():
        if column in read:
            allowed = pa.array(values, schema.field(column).type) if table.num_rows else pa.array(values)
            outside = pc.invert(pc.is_in(table[column], value_set=allowed, skip_nulls=True))
            facts[f"{column} outside {{{', '.join(map(str, values))}}}"] = pc.sum(outside).as_py() or 0
    daily = daily_volume(table, label) if {"dt", label} <= set(read) else None
    return pd.DataFrame([facts]), schema, daily


def build(
    ctx: StageContext, schema: pa.Schema, facts: pd.DataFrame, daily: pd.DataFrame | None, history: list[int]
) -> list[Validation]:
    """The extract's own suites: `schema` (the columns the features need, with their types: judged on the
    extract's schema as an empty frame, the dtype is the column's), `window` (what every row must hold) and
    `daily` (every day's volume and label rate). The values themselves were judged at the source."""
    import great_expectations.expectations as gxe

    required = required_columns(ctx)
    columns = to_frame(schema.empty_table())
    present = [c for c in required if c in columns.columns]
    contract: list = [gxe.ExpectColumnToExist(column=c) for c in required]
    contract += [gxe.ExpectColumnValuesToBeInTypeList(column=c, type_list=TYPE_NAMES[required[c]]) for c in present]
    window = [gxe.ExpectColumnValuesToBeBetween(column=c, min_value=0, max_value=0) for c in facts.columns]
    validations = [Validation("schema", columns, contract), Validation("window", facts, window)]
    config = ctx.model.config.gates.raw

    if daily is not None:
        start, end = ctx.window
        start += dt.timedelta(days=ctx.model.config.label_horizon_days)  # the first days' labels close in the window
        window_days = [(start + dt.timedelta(days=i)).isoformat() for i in range((end - start).days + 1)]
        reference = reference_volume(history, daily)
        validations.append(
            Validation(
                "daily",
                daily,
                [
                    gxe.ExpectColumnDistinctValuesToEqualSet(column="dt", value_set=window_days),
                    gxe.ExpectColumnValuesToBeBetween(
                        column="rows", min_value=config.volume.min * reference, max_value=config.volume.max * reference
                    ),
                    gxe.ExpectColumnValuesToBeBetween(
                        column="label_rate", min_value=config.label_rate.min, max_value=config.label_rate.max
                    ),
                    gxe.ExpectColumnValuesToNotBeNull(column="label_rate"),
                ],
                index_column="dt",
            )
        )
    return validations


def suite_names(ctx: StageContext) -> list[str]:
    """Every suite gate_raw may run (a model's own expectation files must name one of them)."""
    per_table = ("", ".ranges", ".references", ".days")
    return [f"{table}{suffix}" for table in ctx.model.config.sources for suffix in per_table] + list(EXTRACT_SUITES)


@dataclass
class PlannedPartition:
    partition: SourcePartition
    key: str  # of what it is judged on (keiko.gates.sources.verdict_key)
    uri: str  # where its verdict is (or goes)
    content: str | None
    stored: PartitionVerdict | None


def plan(ctx: StageContext, extra: dict) -> list[PlannedPartition]:
    """Every source partition of the window, with the verdict already kept for its content (None: judge it)."""
    sources = ctx.model.config.sources
    partitions = [SourcePartition(t, d, sources[t], sources) for t in sources for d in days_between(*ctx.window)]
    needed = {(p.table, p.day) for p in partitions} | {ref for p in partitions for ref in p.referenced()}
    with phase("read"):  # the partitions' fingerprints: their bytes hashed, or their ETags listed
        contents = {(t, d): ctx.warehouse.partition_fingerprint(t, d) for t, d in sorted(needed)}
    layout = ModelLayout(ctx.store, ctx.model.name)
    planned = []
    for partition in partitions:
        key = verdict_key(partition, contents, extra)
        uri = layout.partition_verdict(partition.table, partition.day.isoformat(), key)
        content = contents[partition.table, partition.day]
        planned.append(PlannedPartition(partition, key, uri, content, ctx.layout.find(uri, PartitionVerdict)))
    return planned


def check_declared_sources(ctx: StageContext) -> None:
    problems = undeclared_reads(ctx.model.config.sources, ctx.store.read_bytes(ctx.layout.extract_sql).decode())
    if problems:
        raise ModelConfigError(
            f"{ctx.model.directory / 'model.yaml'}: sources: does not match what the extract SQL reads: "
            f"{', '.join(problems)}; declare every table and column the SQL reads (and only those)"
        )


def run(ctx: StageContext) -> RawGateResult:
    check_declared_sources(ctx)
    extra = model_expectations(ctx, "raw", suite_names(ctx))
    planned = plan(ctx, extra)
    fresh = [p for p in planned if p.stored is None]
    reused = [p for p in planned if p.stored is not None]
    ctx.log(
        f"gate_raw {ctx.model.name}: {len(planned)} source partitions in the window: {len(fresh)} to validate, "
        f"{len(reused)} judged before (verdicts reused)"
    )
    aggregates: dict[str, dict[str, PartitionAggregates]] = {t: {} for t in ctx.model.config.sources}
    for p in reused:
        aggregates[p.partition.table][p.partition.day.isoformat()] = p.stored.aggregates
    judged: dict[str, list[str]] = {}  # partition label -> the suite labels it ran under

    window, schema, daily = window_facts(ctx, ctx.layout.raw)
    earlier = earlier_daily_counts(ctx)
    history = list(earlier.values())

    def validations() -> Iterator[Validation]:
        for p in fresh:  # one partition's frames at a time: memory follows a day, not the window
            with phase("read"):
                partition_validations, partition_aggregates = p.partition.read(ctx.warehouse)
            aggregates[p.partition.table][p.partition.day.isoformat()] = partition_aggregates
            judged[p.partition.label] = [v.label for v in partition_validations]
            yield from partition_validations
        for table, spec in ctx.model.config.sources.items():
            yield across_days(table, spec, aggregates[table], ctx.model.config.gates.raw)
        yield from build(ctx, schema, window, daily, history)

    outcomes = run_validations(ctx, "raw", validations(), extra=extra)
    now = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
    for p in fresh:
        own = [o for o in outcomes if o.suite in judged[p.partition.label]]
        failed = [o for o in own if not o.passed]
        ctx.layout.write(
            p.uri,
            PartitionVerdict(
                table=p.partition.table,
                day=p.partition.day.isoformat(),
                key=p.key,
                content=p.content or "absent",
                success=not failed,
                expectations=len(own),
                failed=failed,
                aggregates=aggregates[p.partition.table][p.partition.day.isoformat()],
                run_id=ctx.run_id,
                validated_at=now,
            ),
        )
    for p in reused:
        if not p.stored.success:
            ctx.log(f"{p.partition.label}: verdict of {p.stored.validated_at} ({p.stored.run_id or 'a run'}): failed")
    outcomes += [o for p in reused for o in p.stored.failed]

    daily_rows = {} if daily is None else {str(d): int(n) for d, n in zip(daily["dt"], daily["rows"], strict=True)}
    total = sum(daily_rows.values())
    rate = float((daily["rows"] * daily["label_rate"]).sum() / max(total, 1)) if daily is not None else float("nan")
    summary = (
        f"{len(fresh)} source partitions validated, {len(reused)} verdicts reused; "
        f"{total:,} extracted rows over {len(daily_rows)} days, label rate {rate:.4%}"
    )
    facts: dict = {
        "ds": ctx.ds.isoformat(),
        "daily_rows": daily_rows,
        "validated_partitions": [p.partition.label for p in fresh],
        "reused_partitions": [p.partition.label for p in reused],
    }
    if daily is not None:  # what the volume and label-rate bands were judged on (headroom reports)
        facts["volume_reference"] = reference = reference_volume(history, daily)
        # The run page draws each day against these: the earlier days and the band the volume was judged by.
        facts["history_rows"] = earlier
        volume = ctx.model.config.gates.raw.volume
        facts["volume_band"] = [volume.min * reference, volume.max * reference]
        facts["daily_label_rate"] = {str(d): float(r) for d, r in zip(daily["dt"], daily["label_rate"], strict=True)}
    return report(ctx, RawGateResult, outcomes, summary, **facts)
