"""gate_raw: schema, types, keys, ranges, accepted values, daily volume and label rate of the extract."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pandas as pd
import pyarrow as pa

from keiko.contract import ModelLayout, RawGateResult
from keiko.gates.runner import Validation, report, run_validations
from keiko.stages.context import StageContext

# pandas dtype names each column kind may arrive as (pyarrow -> pandas, with or without nulls).
TYPE_NAMES = {
    "int": ["Int8Dtype", "Int16Dtype", "Int32Dtype", "Int64Dtype"],  # nullable: see PANDAS_TYPES
    "float": ["float32", "float64", "Float64"],
    "str": ["StringDtype"],
    "timestamp": ["datetime64[us]", "datetime64[ns]", "datetime64[ms]"],
}
HISTORY_DAYS = 28


def required_columns(ctx: StageContext) -> dict[str, str]:
    schema = dict(ctx.model.features.INPUT_SCHEMA)
    return {
        "dt": "str",
        **{key: "int" for key in ctx.model.config.gates.raw.keys},
        **schema,
        ctx.model.config.label: "int",
    }


def daily_volume(frame: pd.DataFrame, label: str) -> pd.DataFrame:
    grouped = frame.groupby("dt", observed=True)[label]
    return pd.DataFrame({"rows": grouped.size(), "label_rate": grouped.mean()}).reset_index()


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


def build(ctx: StageContext, frame: pd.DataFrame, daily: pd.DataFrame | None, history: list[int]) -> list[Validation]:
    import great_expectations.expectations as gxe

    config = ctx.model.config.gates.raw
    required = required_columns(ctx)
    present = [c for c in required if c in frame.columns]
    rows: list = [gxe.ExpectColumnToExist(column=c) for c in required]
    rows += [gxe.ExpectColumnValuesToBeInTypeList(column=c, type_list=TYPE_NAMES[required[c]]) for c in present]
    rows += [gxe.ExpectColumnValuesToNotBeNull(column=c) for c in present]
    rows += [gxe.ExpectColumnValuesToBeUnique(column=c) for c in config.keys if c in frame.columns]
    rows += [
        gxe.ExpectColumnValuesToBeInSet(column=c, value_set=values)
        for c, values in config.accepted_values.items()
        if c in frame.columns
    ]
    validations = [Validation("rows", frame, rows)]
    ranged = [c for c in config.ranges if c in frame.columns]
    if ranged:
        # GE compares in one vectorized step only for int64/float64 columns and calls Python per value
        # for any other dtype (int32, nullable Int*): 30 s at 7M rows. Its types are checked above.
        as_float = pd.DataFrame({c: pd.to_numeric(frame[c], errors="coerce").astype("float64") for c in ranged})
        validations.append(
            Validation(
                "ranges",
                as_float,
                [
                    gxe.ExpectColumnValuesToBeBetween(column=c, min_value=band.min, max_value=band.max)
                    for c, band in config.ranges.items()
                    if c in ranged
                ],
            )
        )

    if daily is not None:
        start, end = ctx.window
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


# GE 1.24 matches a column's dtype against instances built from the type names it is given;
# pandas 3's default "str" dtype (na_value=nan) equals none of them, pd.StringDtype() does. Nullable
# integers keep a key with nulls an integer column, so gate_raw reports the nulls, not a float type.
PANDAS_TYPES = {
    pa.string(): pd.StringDtype(),
    pa.large_string(): pd.StringDtype(),
    pa.int8(): pd.Int8Dtype(),
    pa.int16(): pd.Int16Dtype(),
    pa.int32(): pd.Int32Dtype(),
    pa.int64(): pd.Int64Dtype(),
}


def to_frame(table: pa.Table) -> pd.DataFrame:
    return table.to_pandas(types_mapper=PANDAS_TYPES.get)


def run(ctx: StageContext) -> RawGateResult:
    frame = to_frame(ctx.store.read_table(ctx.layout.raw))
    earlier = earlier_daily_counts(ctx)
    history = list(earlier.values())
    ctx.log(
        f"gate_raw {ctx.model.name}: {len(frame):,} rows x {frame.shape[1]} columns; "
        f"volume reference from {len(history)} earlier days + the window"
    )
    label = ctx.model.config.label
    daily = daily_volume(frame, label) if {"dt", label} <= set(frame.columns) else None
    outcomes = run_validations(ctx, "raw", build(ctx, frame, daily, history))
    daily_rows = {} if daily is None else {str(d): int(n) for d, n in zip(daily["dt"], daily["rows"], strict=True)}
    rate = float(frame[label].mean()) if label in frame.columns else float("nan")
    summary = f"{len(frame):,} rows over {len(daily_rows)} days, label rate {rate:.4%}"
    facts: dict = {"ds": ctx.ds.isoformat(), "daily_rows": daily_rows}
    if daily is not None:  # what the volume and label-rate bands were judged on (headroom reports)
        facts["volume_reference"] = reference = reference_volume(history, daily)
        # The run page draws each day against these: the earlier days and the band the volume was judged by.
        facts["history_rows"] = earlier
        volume = ctx.model.config.gates.raw.volume
        facts["volume_band"] = [volume.min * reference, volume.max * reference]
        facts["daily_label_rate"] = {str(d): float(r) for d, r in zip(daily["dt"], daily["label_rate"], strict=True)}
    return report(ctx, RawGateResult, outcomes, summary, **facts)
