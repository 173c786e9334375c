"""Data faults that `keiko synth --inject KIND[:DATE]` writes into a synthetic day.

One per incident the gates exist for, so the bad-input catalogue test exercises the same data path
a real upstream change would: warehouse partition -> extract -> gate. Each fault takes the day's
tables and a generator seeded by (seed, day) and returns the tables to write; `None` means the
day's partitions are absent.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

Tables = dict[str, pa.Table]


def _set(table: pa.Table, name: str, values: pa.Array | pa.ChunkedArray) -> pa.Table:
    return table.set_column(table.schema.get_field_index(name), name, values)


def _rows(rng: np.random.Generator, table: pa.Table, share: float) -> pa.BooleanArray:
    """A random `share` of the table's rows, as a mask."""
    return pa.array(rng.random(table.num_rows) < share)


def missing_column(tables: Tables, rng: np.random.Generator) -> Tables:
    return {**tables, "impressions": tables["impressions"].drop_columns(["country"])}


def wrong_type(tables: Tables, rng: np.random.Generator) -> Tables:
    impressions = tables["impressions"]
    return {**tables, "impressions": _set(impressions, "position", pc.cast(impressions["position"], pa.string()))}


def null_key(tables: Tables, rng: np.random.Generator) -> Tables:
    impressions = tables["impressions"]
    ids = pc.if_else(_rows(rng, impressions, 0.01), pa.scalar(None, pa.int64()), impressions["impression_id"])
    return {**tables, "impressions": _set(impressions, "impression_id", ids)}


def out_of_range(tables: Tables, rng: np.random.Generator) -> Tables:
    impressions = tables["impressions"]
    position = pc.if_else(_rows(rng, impressions, 0.01), pa.scalar(9, pa.int32()), impressions["position"])
    return {**tables, "impressions": _set(impressions, "position", position)}


def unit_x100(tables: Tables, rng: np.random.Generator) -> Tables:
    impressions = tables["impressions"]  # prices in cents instead of dollars
    for column in ("floor_price", "bid_price"):
        impressions = _set(impressions, column, pc.multiply(impressions[column], 100.0))
    return {**tables, "impressions": impressions}


def remapped_codes(tables: Tables, rng: np.random.Generator) -> Tables:
    """App ids re-encoded upstream: every id is still a valid-looking app id, but of another app."""
    impressions = tables["impressions"]
    ids = impressions["app_id"].to_numpy()
    known = np.unique(ids)
    mapping = dict(zip(known, rng.permutation(known), strict=True))
    return {**tables, "impressions": _set(impressions, "app_id", pa.array([mapping[i] for i in ids], pa.int64()))}


def label_collapse(tables: Tables, rng: np.random.Generator) -> Tables:
    clicks = tables["clicks"]  # a tracking outage: 90% of the click events are lost
    return {**tables, "clicks": clicks.filter(_rows(rng, clicks, 0.1))}


def volume_drop(tables: Tables, rng: np.random.Generator) -> Tables:
    """Most ingestion shards went missing: 30% of the day's impressions, with their clicks, remain."""
    impressions = tables["impressions"]
    kept = impressions.filter(_rows(rng, impressions, 0.3))["impression_id"]
    return {name: table.filter(pc.is_in(table["impression_id"], kept)) for name, table in tables.items()}


def duplicates(tables: Tables, rng: np.random.Generator) -> Tables:
    impressions = tables["impressions"]  # a replayed ingestion batch
    return {
        **tables,
        "impressions": pa.concat_tables([impressions, impressions.filter(_rows(rng, impressions, 0.02))]),
    }


def empty_partition(tables: Tables, rng: np.random.Generator) -> Tables:
    return {name: table.slice(0, 0) for name, table in tables.items()}


def missing_day(tables: Tables, rng: np.random.Generator) -> None:
    return None


def drift(tables: Tables, rng: np.random.Generator) -> Tables:
    """A traffic shift: most of the day's impressions now come from one country."""
    impressions = tables["impressions"]
    country = pc.if_else(_rows(rng, impressions, 0.7), pa.scalar("BR"), impressions["country"])
    return {**tables, "impressions": _set(impressions, "country", country)}


def label_noise(tables: Tables, rng: np.random.Generator) -> Tables:
    """A join bug: 80% of impressions get a click label unrelated to the impression (same click rate)."""
    ids = tables["impressions"]["impression_id"].to_numpy()
    clicked = np.isin(ids, tables["clicks"]["impression_id"].to_numpy())
    replaced = rng.random(len(ids)) < 0.8
    clicked = np.where(replaced, rng.random(len(ids)) < clicked.mean(), clicked)
    times = tables["impressions"]["event_time"].filter(pa.array(clicked))
    return {**tables, "clicks": pa.table({"impression_id": ids[clicked], "click_time": times})}


def shifted_timestamps(tables: Tables, rng: np.random.Generator) -> Tables:
    """A timezone bug upstream: local time (UTC+9) written as UTC, so the evening's events sit in the wrong day."""
    impressions = tables["impressions"]
    shifted = pc.add(impressions["event_time"], pa.scalar(9 * 3600 * 1_000_000, pa.duration("us")))
    return {**tables, "impressions": _set(impressions, "event_time", shifted)}


def replayed_clicks(tables: Tables, rng: np.random.Generator) -> Tables:
    """The day's click log ingested twice; the extract's SELECT DISTINCT hides it."""
    return {**tables, "clicks": pa.concat_tables([tables["clicks"], tables["clicks"]])}


def orphan_clicks(tables: Tables, rng: np.random.Generator) -> Tables:
    """5% of the day's click events carry impression ids no impression has (a tracker's id bug); the LEFT JOIN
    of the extract drops them silently."""
    clicks = tables["clicks"]
    ids = pc.if_else(_rows(rng, clicks, 0.05), pc.add(clicks["impression_id"], 5_000_000), clicks["impression_id"])
    return {**tables, "clicks": _set(clicks, "impression_id", ids)}


def clicks_before_impressions(tables: Tables, rng: np.random.Generator) -> Tables:
    """A client clock skew: 10% of the clicks are stamped up to 10 minutes before their impression."""
    clicks, impressions = tables["clicks"], tables["impressions"]
    ids = impressions["impression_id"].to_numpy()  # ascending, as keiko.synth numbers them
    shown = impressions["event_time"].to_numpy()[np.searchsorted(ids, clicks["impression_id"].to_numpy())]
    early = shown - (rng.uniform(1, 600, clicks.num_rows) * 1e6).astype("timedelta64[us]")
    skewed = np.where(rng.random(clicks.num_rows) < 0.1, early, clicks["click_time"].to_numpy())
    return {**tables, "clicks": _set(clicks, "click_time", pa.array(skewed, pa.timestamp("us")))}


def default_collapse(tables: Tables, rng: np.random.Generator) -> Tables:
    """A bidder release sends its default floor (0.01 USD CPM) for a fifth of the requests: a valid value,
    in range, on 20% of the rows."""
    impressions = tables["impressions"]
    floor = pc.if_else(_rows(rng, impressions, 0.2), pa.scalar(0.01), impressions["floor_price"])
    return {**tables, "impressions": _set(impressions, "floor_price", floor)}


def ingestion_outage(tables: Tables, rng: np.random.Generator) -> Tables:
    """Five hours of the night (00:00-05:00 UTC) never landed: ~10% of the day, inside the volume band."""
    impressions = tables["impressions"]
    hour = pc.hour(impressions["event_time"])
    kept = impressions.filter(pc.greater_equal(hour, 5))
    ids = kept["impression_id"]
    return {
        name: kept if name == "impressions" else table.filter(pc.is_in(table["impression_id"], ids))
        for name, table in tables.items()
    }


FAULTS: dict[str, Callable[[Tables, np.random.Generator], Tables | None]] = {
    "missing-column": missing_column,
    "wrong-type": wrong_type,
    "null-key": null_key,
    "out-of-range": out_of_range,
    "unit-x100": unit_x100,
    "remapped-codes": remapped_codes,
    "label-collapse": label_collapse,
    "volume-drop": volume_drop,
    "duplicates": duplicates,
    "empty-partition": empty_partition,
    "missing-day": missing_day,
    "drift": drift,
    "label-noise": label_noise,
    "shifted-timestamps": shifted_timestamps,
    "replayed-clicks": replayed_clicks,
    "orphan-clicks": orphan_clicks,
    "clicks-before-impressions": clicks_before_impressions,
    "default-collapse": default_collapse,
    "ingestion-outage": ingestion_outage,
}
