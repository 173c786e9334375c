"""Deterministic synthetic DSP logs with a known generating process.

The world (apps, media, campaigns, ads and their true effects) comes from `seed` alone; the rows
of a day come from (seed, day), so a day's partition is byte-identical however many days are
written around it. The click probability is a logistic model of main effects and two crosses,
so the hashed-cross logistic regression can approach it, and the true probability of every
impression is written to a separate `truth` table (never read by a model) to compute the
Bayes-optimal logloss of any day. The users of user-level models, with tables of their own, are
keiko.synth_users'.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from keiko.atomic import write_atomically

USER_TABLES = ("user_profiles", "user_purchases", "user_truth")  # keiko.synth_users
TABLES = ("impressions", "clicks", "conversions", "truth", *USER_TABLES)
OS_NAMES = np.array(["android", "ios"])
COUNTRIES = np.array(["JP", "US", "KR", "TW", "TH", "ID", "GB", "DE", "FR", "BR"])
COUNTRY_SHARE = np.array([0.35, 0.2, 0.1, 0.07, 0.06, 0.06, 0.05, 0.04, 0.04, 0.03])
CATEGORIES = np.array([f"IAB{i}" for i in range(1, 25)])
# Traffic by hour of day (UTC): a daily cycle with an evening peak.
HOUR_SHARE = 1.0 + 0.6 * np.sin(2 * np.pi * (np.arange(24) - 9) / 24)
HOUR_SHARE /= HOUR_SHARE.sum()
POSITION_SHARE = np.array([0.4, 0.3, 0.2, 0.1])
# Monday..Sunday: more traffic and slightly more clicks at the weekend, as in mobile ad logs.
WEEKDAY_VOLUME = np.array([0.97, 0.96, 0.96, 0.98, 1.01, 1.08, 1.06])
WEEKDAY_CLICK_EFFECT = np.array([0.0, -0.01, -0.01, 0.0, 0.02, 0.06, 0.05])
DAILY_VOLUME_NOISE = 0.04  # sd of the log of a day's volume around its weekday level


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def _zipf_share(n: int, exponent: float) -> np.ndarray:
    share = 1.0 / np.arange(1, n + 1) ** exponent
    return share / share.sum()


@dataclass(frozen=True)
class World:
    """Entities and their true effects on the click and conversion logits."""

    app_share: np.ndarray
    app_effect: np.ndarray
    media_app: np.ndarray  # media index -> app index
    media_start: np.ndarray  # app index -> first media index
    media_count: np.ndarray
    media_effect: np.ndarray
    media_floor: np.ndarray  # median floor price of the media (CPM, USD)
    ad_share: np.ndarray
    ad_campaign: np.ndarray
    ad_effect: np.ndarray
    campaign_category: np.ndarray
    campaign_effect: np.ndarray
    device_os: np.ndarray  # device model index -> os index
    device_effect: np.ndarray
    country_effect: np.ndarray
    category_os_effect: np.ndarray  # (category, os)
    app_category_effect: np.ndarray  # (app, category)
    category_conversion: np.ndarray
    app_conversion: np.ndarray

    @classmethod
    def from_seed(cls, seed: int) -> World:
        rng = np.random.default_rng([seed, 0])
        n_apps, n_campaigns, n_devices = 400, 200, 40
        media_count = rng.integers(1, 8, n_apps)
        media_start = np.concatenate([[0], np.cumsum(media_count)[:-1]])
        n_media = int(media_count.sum())
        ads_per_campaign = rng.integers(1, 20, n_campaigns)
        n_ads = int(ads_per_campaign.sum())
        return cls(
            app_share=rng.permutation(_zipf_share(n_apps, 1.05)),
            app_effect=rng.normal(0, 0.5, n_apps),
            media_app=np.repeat(np.arange(n_apps), media_count),
            media_start=media_start,
            media_count=media_count,
            media_effect=rng.normal(0, 0.2, n_media),
            media_floor=np.exp(rng.normal(np.log(0.8), 0.5, n_media)),
            ad_share=rng.permutation(_zipf_share(n_ads, 0.9)),
            ad_campaign=np.repeat(np.arange(n_campaigns), ads_per_campaign),
            ad_effect=rng.normal(0, 0.4, n_ads),
            campaign_category=rng.integers(0, len(CATEGORIES), n_campaigns),
            campaign_effect=rng.normal(0, 0.2, n_campaigns),
            device_os=rng.integers(0, len(OS_NAMES), n_devices),
            device_effect=rng.normal(0, 0.1, n_devices),
            country_effect=rng.normal(0, 0.2, len(COUNTRIES)),
            category_os_effect=rng.normal(0, 0.3, (len(CATEGORIES), len(OS_NAMES))),
            app_category_effect=rng.normal(0, 0.2, (n_apps, len(CATEGORIES))),
            category_conversion=rng.normal(0, 0.5, len(CATEGORIES)),
            app_conversion=rng.normal(0, 0.3, n_apps),
        )


@dataclass(frozen=True)
class WorldChange:
    """How the world differs from its seed from some day on (keiko traffic --shift): what monitoring must see.
    Only the probabilities change, never the random draws, so an unchanged part of a day stays as it was."""

    click_rate: float = 0.0  # every impression's true click probability times (1 + click_rate)
    growing_app_share: float | None = None  # GROWING_APP's share of the traffic (the other apps keep their ratios)

    def app_share(self, world: World) -> np.ndarray:
        if self.growing_app_share is None:
            return world.app_share
        others = np.delete(world.app_share, GROWING_APP)
        return np.insert(others / others.sum() * (1.0 - self.growing_app_share), GROWING_APP, self.growing_app_share)


GROWING_APP = 57  # an app whose traffic a WorldChange can grow: at seed 7 the 11th largest, 1.4% of impressions
CLICK_BASE_LOGIT = np.log(0.025 / 0.975)
# Clicks come within a minute or so of the impression (mean 30 s); conversions within days of the click: mean
# 6 h, 1.8% after a day, none after 60 h (inside cvr's 72 h attribution window: sources.conversions).
CONVERSION_DELAY_MEAN_S, CONVERSION_DELAY_MAX_S = 6 * 3600.0, 60 * 3600.0
CONVERSION_BASE_LOGIT = np.log(0.08 / 0.92)
POSITION_EFFECT = np.array([0.0, -0.3, -0.6, -0.9])


def daily_rows(day: dt.date, rows_per_day: int, seed: int) -> int:
    """The day's impressions: `rows_per_day` on average, with a weekday cycle and day-to-day noise."""
    noise = np.random.default_rng([seed, day.toordinal(), 1]).normal(0.0, DAILY_VOLUME_NOISE)
    return max(1, round(rows_per_day * WEEKDAY_VOLUME[day.weekday()] * np.exp(noise)))


def generate_day(
    world: World, day: dt.date, rows: int, seed: int, change: WorldChange = WorldChange()
) -> dict[str, pa.Table]:
    """All tables of one day with exactly `rows` impressions; deterministic in (world, day, rows, seed, change)."""
    rng = np.random.default_rng([seed, day.toordinal()])

    hour = rng.choice(24, rows, p=HOUR_SHARE)
    second_of_day = hour * 3600 + rng.integers(0, 3600, rows)
    order = np.argsort(second_of_day, kind="stable")
    hour, second_of_day = hour[order], second_of_day[order]
    day_start_us = (day - dt.date(1970, 1, 1)).days * 86_400 * 1_000_000
    event_time = day_start_us + second_of_day * 1_000_000 + rng.integers(0, 1_000_000, rows)

    app = rng.choice(len(world.app_share), rows, p=change.app_share(world))
    media = world.media_start[app] + (rng.random(rows) * world.media_count[app]).astype(np.int64)
    ad = rng.choice(len(world.ad_share), rows, p=world.ad_share)
    campaign = world.ad_campaign[ad]
    category = world.campaign_category[campaign]
    device = rng.integers(0, len(world.device_os), rows)
    os_index = world.device_os[device]
    country = rng.choice(len(COUNTRIES), rows, p=COUNTRY_SHARE)
    position = rng.choice(4, rows, p=POSITION_SHARE)
    floor_price = np.round(world.media_floor[media] * np.exp(rng.normal(0, 0.3, rows)), 4)
    user_id = rng.integers(1, 2_000_000, rows)

    logit = (
        CLICK_BASE_LOGIT
        + world.app_effect[app]
        + world.media_effect[media]
        + world.ad_effect[ad]
        + world.campaign_effect[campaign]
        + world.device_effect[device]
        + world.country_effect[country]
        + world.category_os_effect[category, os_index]
        + world.app_category_effect[app, category]
        + POSITION_EFFECT[position]
        + 0.25 * np.sin(2 * np.pi * (hour - 14) / 24)
        + WEEKDAY_CLICK_EFFECT[day.weekday()]
        - 0.3 * np.log(floor_price / 0.8)
    )
    p_click = np.minimum(_sigmoid(logit) * (1.0 + change.click_rate), 1.0)
    clicked = rng.random(rows) < p_click
    p_conversion = _sigmoid(
        CONVERSION_BASE_LOGIT + world.category_conversion[category] + world.app_conversion[app] + 0.2 * os_index
    )
    converted = clicked & (rng.random(rows) < p_conversion)

    impression_id = (day.toordinal() * 10_000_000 + np.arange(rows)).astype(np.int64)
    bid_price = np.round(floor_price * (1.0 + rng.exponential(0.3, rows)), 4)

    impressions = pa.table(
        {
            "event_time": pa.array(event_time, pa.timestamp("us")),
            "impression_id": impression_id,
            "user_id": user_id.astype(np.int64),
            "app_id": (app + 1000).astype(np.int64),
            "media_id": (media + 100_000).astype(np.int64),
            "ad_id": (ad + 500_000).astype(np.int64),
            "campaign_id": (campaign + 7000).astype(np.int64),
            "advertiser_category": CATEGORIES[category],
            "os": OS_NAMES[os_index],
            "device_model": np.char.add(np.char.add(OS_NAMES[os_index], "-model-"), device.astype(str)),
            "country": COUNTRIES[country],
            "position": (position + 1).astype(np.int32),
            "floor_price": floor_price,
            "bid_price": bid_price,
        }
    )

    click_rows = np.flatnonzero(clicked)
    # Real click logs carry duplicate click events (double taps, retried beacons): ~3% here.
    duplicates = click_rows[rng.random(len(click_rows)) < 0.03]
    click_rows_with_dups = np.sort(np.concatenate([click_rows, duplicates]), kind="stable")
    click_time = event_time[click_rows_with_dups] + (rng.exponential(30.0, len(click_rows_with_dups)) * 1e6).astype(
        np.int64
    )
    clicks = pa.table(
        {
            "impression_id": impression_id[click_rows_with_dups],
            "click_time": pa.array(click_time, pa.timestamp("us")),
        }
    )

    conversion_rows = np.flatnonzero(converted)
    # A conversion follows the impression's first click (converted rows are clicked rows).
    first_click = np.minimum.reduceat(click_time, np.searchsorted(click_rows_with_dups, click_rows))
    conversion_after = first_click[np.searchsorted(click_rows, conversion_rows)]
    conversions = pa.table(
        {
            "impression_id": impression_id[conversion_rows],
            "conversion_time": pa.array(
                conversion_after
                + (
                    np.minimum(rng.exponential(CONVERSION_DELAY_MEAN_S, len(conversion_rows)), CONVERSION_DELAY_MAX_S)
                    * 1e6
                ).astype(np.int64),
                pa.timestamp("us"),
            ),
            "value": np.round(np.exp(rng.normal(2.0, 1.0, len(conversion_rows))), 2),
        }
    )
    truth = pa.table(
        {
            "impression_id": impression_id,
            "p_click": p_click,
            "p_conversion_given_click": p_conversion,
        }
    )
    return {"impressions": impressions, "clicks": clicks, "conversions": conversions, "truth": truth}


def partition_path(warehouse_dir: Path, table: str, day: dt.date) -> Path:
    return warehouse_dir / table / f"dt={day.isoformat()}" / "part-0.parquet"


def write_day(warehouse_dir: Path, day: dt.date, tables: Mapping[str, pa.Table]) -> None:
    """The day's partitions of each table, each replaced whole."""
    for name, table in tables.items():
        write_atomically(
            partition_path(warehouse_dir, name, day),
            lambda temp, table=table: pq.write_table(table, temp, compression="zstd"),
        )


def write_warehouse(
    warehouse_dir: Path,
    end_date: dt.date,
    days: int,
    rows_per_day: int,
    seed: int = 7,
    progress: Callable[[str], None] = print,
    faults: Mapping[dt.date, Sequence[str]] | None = None,
) -> list[dt.date]:
    """Write `days` days ending `end_date`; `faults` names the keiko.faults to inject into some days."""
    from keiko.faults import FAULTS
    from keiko.synth_users import UserDays, UserWorld, population

    world = World.from_seed(seed)
    users = UserDays(UserWorld.from_seed(seed, population(rows_per_day)), seed)
    dates = [end_date - dt.timedelta(days=offset) for offset in range(days - 1, -1, -1)]
    faults = faults or {}
    for index, day in enumerate(dates, start=1):
        tables: dict[str, pa.Table] | None = generate_day(world, day, daily_rows(day, rows_per_day, seed), seed)
        for fault in faults.get(day, ()):  # faults of the DSP log; a missing day misses the user tables too
            tables = FAULTS[fault](tables, np.random.default_rng([seed, day.toordinal(), 2]))
        if tables is not None:
            tables = {**tables, **users.tables(day)}
        injected = f" [injected: {', '.join(faults[day])}]" if faults.get(day) else ""
        if tables is None:
            for name in TABLES:
                partition_path(warehouse_dir, name, day).unlink(missing_ok=True)
            progress(f"[{index}/{len(dates)}] {day}: no partitions{injected}")
            continue
        write_day(warehouse_dir, day, tables)
        rows = tables["impressions"].num_rows
        n_clicks = len(np.unique(tables["clicks"]["impression_id"].to_numpy()))
        progress(
            f"[{index}/{len(dates)}] {day}: {rows:,} impressions, {n_clicks:,} clicked "
            f"({n_clicks / max(rows, 1):.2%}), {tables['conversions'].num_rows:,} conversions; "
            f"{tables['user_profiles'].num_rows:,} active users, {tables['user_purchases'].num_rows:,} purchases"
            f"{injected}"
        )
    return dates
