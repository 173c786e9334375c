"""gate_raw at the source grain: each warehouse table the extract SQL reads, one day's partition at a time.

The extract's joined output hides faults of its sources: `SELECT DISTINCT` absorbs a replayed click log and a
`LEFT JOIN` drops clicks whose impression does not exist. So each source table the model declares
(model.yaml `sources:`) is validated on its own partitions, in four suites:

- `<table>`: one day's rows: the key unique at the table's grain, event times inside the partition's day
  (UTC), every column the SQL reads of the right type, without nulls, in its accepted set or pattern;
- `<table>.ranges`: the declared numeric ranges of those rows;
- `<table>.references` (across tables): each referenced row exists, in the day or the days before, and this
  event comes after it;
- `<table>.days` (across days): every day of the window against the median of the window's other days: its
  hour-of-day profile and each column's most frequent value's share (a column collapsing onto a default).

The first three are judged once per partition content (keiko.gates.raw keeps the verdict); the fourth is
judged every run, on the aggregates the verdicts keep.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from keiko.contract import PartitionAggregates
from keiko.gates.frames import TYPE_NAMES, as_float, to_frame
from keiko.gates.runner import Validation
from keiko.modeldef import RawGate, Reference, SourceTable
from keiko.warehouse import Warehouse, columns_read
from keiko.warehouse import quote_identifier as quoted

HOURS = 24
MIN_REFERENCE_DAYS = 3  # fewer other days than this and a day is not compared with them
PARTITION_COLUMN = "dt"


def undeclared_reads(sources: dict[str, SourceTable], sql: str) -> list[str]:
    """What the SQL reads that model.yaml's `sources:` does not declare, and declared tables it never reads."""
    read = columns_read(sql)
    problems = [
        f"{table}.{column}"
        for table, columns in sorted(read.items())
        for column in sorted(columns - {PARTITION_COLUMN})
        if table not in sources or column not in sources[table].columns
    ]
    problems += [f"{table} (declared, not read)" for table in sorted(set(sources) - set(read))]
    return problems


def day_bounds(day: dt.date, spec: SourceTable) -> tuple[dt.datetime, dt.datetime]:
    start = dt.datetime.combine(day, dt.time())
    return start, start + dt.timedelta(days=1, hours=spec.max_lateness_hours)


def resolved_column(reference: Reference) -> str:
    return f"{reference.column} in {reference.table}"


def delay_column(reference: Reference, sources: dict[str, SourceTable]) -> str:
    return f"hours after {reference.table}.{sources[reference.table].event_time}"


@dataclass(frozen=True)
class SourcePartition:
    """One day of one declared source table, and what its row-level suites expect of it."""

    table: str
    day: dt.date
    spec: SourceTable
    sources: dict[str, SourceTable]

    @property
    def label(self) -> str:
        return f"{self.table}/dt={self.day.isoformat()}"

    def suites(self) -> dict[str, list[Any]]:
        import great_expectations.expectations as gxe

        spec, table = self.spec, self.table
        rows: list[Any] = [
            gxe.ExpectCompoundColumnsToBeUnique(column_list=spec.key)
            if len(spec.key) > 1
            else gxe.ExpectColumnValuesToBeUnique(column=spec.key[0])
        ]
        start, end = day_bounds(self.day, spec)
        rows.append(
            gxe.ExpectColumnValuesToBeBetween(
                column=spec.event_time,
                min_value=start,
                max_value=end,
                strict_max=True,
                meta={"why": f"{table}'s events of dt={self.day} happened that day (UTC)"},
            )
        )
        for name, column in spec.columns.items():
            rows.append(gxe.ExpectColumnValuesToBeInTypeList(column=name, type_list=TYPE_NAMES[column.type]))
            if not column.nullable:
                rows.append(gxe.ExpectColumnValuesToNotBeNull(column=name))
            if column.accepted is not None:
                rows.append(gxe.ExpectColumnValuesToBeInSet(column=name, value_set=column.accepted))
            if column.regex is not None:
                rows.append(gxe.ExpectColumnValuesToMatchRegex(column=name, regex=column.regex))
        suites = {table: rows}
        ranges = [
            gxe.ExpectColumnValuesToBeBetween(column=name, min_value=c.min, max_value=c.max)
            for name, c in spec.columns.items()
            if c.ranged
        ]
        if ranges:
            suites[f"{table}.ranges"] = ranges
        references: list[Any] = []
        for reference in spec.references:
            references.append(gxe.ExpectColumnValuesToNotBeNull(column=resolved_column(reference)))
            references.append(
                gxe.ExpectColumnValuesToBeBetween(
                    column=delay_column(reference, self.sources), min_value=0, max_value=reference.max_delay_hours
                )
            )
        if references:
            suites[f"{table}.references"] = references
        return suites

    def referenced(self) -> list[tuple[str, dt.date]]:
        """The (table, day) partitions its references resolve in."""
        return [
            (reference.table, self.day - dt.timedelta(days=back))
            for reference in self.spec.references
            for back in range(reference.days_before + 1)
        ]

    def read(self, warehouse: Warehouse) -> tuple[list[Validation], PartitionAggregates]:
        """Its rows as the frames its suites validate, and the aggregates the across-days suite compares."""
        columns = ", ".join(quoted(c) for c in self.spec.columns)
        day = self.day.isoformat()
        frame = to_frame(
            warehouse.query(f"SELECT {columns} FROM {quoted(self.table)} WHERE {PARTITION_COLUMN} = '{day}'")
        )
        suites = self.suites()
        frames = {self.table: frame}
        if f"{self.table}.ranges" in suites:
            ranged = [name for name, column in self.spec.columns.items() if column.ranged]
            frames[f"{self.table}.ranges"] = as_float(frame, ranged)
        if self.spec.references:
            frames[f"{self.table}.references"] = self.read_references(warehouse)
        partition = f"dt={day}"
        validations = [Validation(name, frames[name], suites[name], partition=partition) for name in suites]
        return validations, aggregates(frame, self.spec)

    def read_references(self, warehouse: Warehouse) -> pd.DataFrame:
        """Per event: each reference's referenced key where it resolved (null where not), and the hours since
        the first referenced event."""
        event = quoted(self.spec.event_time)
        joins, selected = [], [f"e.{event} AS event_time"]
        for n, reference in enumerate(self.spec.references):
            target = self.sources[reference.table]
            column, alias = quoted(reference.column), f"r{n}"
            first = (self.day - dt.timedelta(days=reference.days_before)).isoformat()
            joins.append(
                f"LEFT JOIN (SELECT {column}, min({quoted(target.event_time)}) AS first_time "
                f"FROM {quoted(reference.table)} WHERE {PARTITION_COLUMN} BETWEEN '{first}' AND '{self.day}' "
                f"GROUP BY {column}) AS {alias} ON e.{column} = {alias}.{column}"
            )
            selected += [f"{alias}.{column} AS resolved_{n}", f"{alias}.first_time AS first_time_{n}"]
        sql = (
            f"SELECT {', '.join(selected)} FROM {quoted(self.table)} AS e {' '.join(joins)} "
            f"WHERE e.{PARTITION_COLUMN} = '{self.day}'"
        )
        joined = to_frame(warehouse.query(sql))
        frame = {}
        for n, reference in enumerate(self.spec.references):
            frame[resolved_column(reference)] = joined[f"resolved_{n}"]
            hours = (joined["event_time"] - joined[f"first_time_{n}"]).dt.total_seconds() / 3600
            frame[delay_column(reference, self.sources)] = hours.astype("float64")
        return pd.DataFrame(frame)


def judged_columns(spec: SourceTable) -> list[str]:
    """Columns whose most frequent value's share is compared across days: not keys, times or references."""
    skipped = {*spec.key, spec.event_time, *(r.column for r in spec.references)}
    return [
        name
        for name, column in spec.columns.items()
        if column.judge_top_share and column.type != "timestamp" and name not in skipped
    ]


def aggregates(frame: pd.DataFrame, spec: SourceTable) -> PartitionAggregates:
    rows = len(frame)
    hours = pd.to_datetime(frame[spec.event_time], errors="coerce").dt.hour.dropna().astype(int)
    counts = np.bincount(hours.to_numpy(), minlength=HOURS)[:HOURS] if len(hours) else np.zeros(HOURS)
    shares = counts / counts.sum() if counts.sum() else counts.astype(float)
    top = {
        name: float(frame[name].value_counts(dropna=False).iloc[0] / rows) if rows else 0.0
        for name in judged_columns(spec)
        if name in frame.columns
    }
    return PartitionAggregates(rows=rows, hour_shares=[float(s) for s in shares], top_shares=top)


def across_days(table: str, spec: SourceTable, by_day: dict[str, PartitionAggregates], config: RawGate) -> Validation:
    """Each day of the window against the median of the other days (those with enough rows to compare)."""
    import great_expectations.expectations as gxe

    days = sorted(by_day)
    comparable = {d for d in days if by_day[d].rows >= config.min_rows_across_days}
    columns = judged_columns(spec)
    records = []
    for day in days:
        others = [by_day[d] for d in sorted(comparable - {day})]
        record: dict[str, Any] = {"dt": day, "rows": by_day[day].rows}
        judged = day in comparable and len(others) >= MIN_REFERENCE_DAYS
        profile = np.median([o.hour_shares for o in others], axis=0) if judged else None
        record["hour profile distance"] = (
            0.5 * float(np.abs(np.asarray(by_day[day].hour_shares) - profile / profile.sum()).sum())
            if judged and profile.sum()
            else np.nan
        )
        for column in columns:
            shares = [o.top_shares[column] for o in others if column in o.top_shares]
            record[f"top share change: {column}"] = (
                by_day[day].top_shares.get(column, np.nan) - float(np.median(shares)) if judged and shares else np.nan
            )
        records.append(record)
    frame = pd.DataFrame(records)
    band = config.top_share_max_change
    expectations = [
        gxe.ExpectColumnValuesToBeBetween(
            column="hour profile distance", min_value=0.0, max_value=config.hour_profile_max_distance
        ),
        *(
            gxe.ExpectColumnValuesToBeBetween(column=f"top share change: {c}", min_value=-band, max_value=band)
            for c in columns
        ),
    ]
    return Validation(f"{table}.days", frame, expectations, index_column="dt")


def verdict_key(
    partition: SourcePartition, contents: dict[tuple[str, dt.date], str | None], extra: dict[str, list[Any]]
) -> str:
    """What a verdict was judged on: the partition's content, the partitions its references resolve in, and
    every expectation of its suites (the model's own included), so a change to any of them revalidates."""
    suites = partition.suites()
    expectations = [
        e.configuration.to_json_dict() for name in sorted(suites) for e in [*suites[name], *extra.get(name, [])]
    ]
    basis = {
        "content": contents[partition.table, partition.day],
        "references": {f"{t}/dt={d}": contents.get((t, d)) for t, d in partition.referenced()},
        "expectations": expectations,
    }
    return hashlib.sha256(json.dumps(basis, sort_keys=True, default=str).encode()).hexdigest()[:32]
