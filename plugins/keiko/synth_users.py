"""The synthetic warehouse's users: a population with persistent propensities, for user-level models (user_value).

The DSP log's users (keiko.synth) are drawn afresh for every impression, with no signal of their own; these are
not. A population of `users` people comes from the seed alone, each with a lasting engagement (how often they are
active) and a purchase propensity, so a user's past predicts their future. Three tables a day, drawn in their own
random stream ([seed, day, USER_STREAM]) so the DSP tables do not change with them:

- `user_profiles`: one row per user active that day, a CDP's daily snapshot with the rolling counts an upstream
  job would compute (sessions and active days over 7 days, purchases over 28);
- `user_purchases`: one row per purchase (at most one per user and day);
- `user_truth` (never read by a model): each profile row's true probability of a purchase in the 7 days after
  its day, exactly 1 - (1 - q)^7 for the user's daily purchase probability q, for the Bayes-optimal ceiling.

A day depends on the draws of the 27 days before it (the rolling counts), each drawn from (seed, that day) alone:
a day's partitions are the same however many days are written around it.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from functools import cached_property

import numpy as np
import pyarrow as pa

from keiko.synth import COUNTRIES, COUNTRY_SHARE, OS_NAMES

USER_STREAM = 5  # the third element of this module's random streams: apart from keiko.synth's 0..2
HORIZON_DAYS = 7  # user_truth's horizon: a purchase in the 7 days after the profile's day
PURCHASE_DAYS = 28  # the profile's purchases_28d
SESSION_DAYS = 7  # the profile's sessions_7d and active_days_7d
USERS_PER_IMPRESSION = 0.2  # the population's size against keiko synth's impressions a day


def population(rows_per_day: int) -> int:
    return max(500, int(rows_per_day * USERS_PER_IMPRESSION))


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


@dataclass(frozen=True)
class UserWorld:
    """Every user's lasting traits: os, country, P(active on a day), P(purchase | active)."""

    os_index: np.ndarray
    country: np.ndarray
    p_active: np.ndarray
    p_purchase_if_active: np.ndarray

    @classmethod
    def from_seed(cls, seed: int, users: int) -> UserWorld:
        rng = np.random.default_rng([seed, USER_STREAM])
        os_index = (rng.random(users) < 0.45).astype(np.int64)  # ios
        country = rng.choice(len(COUNTRIES), users, p=COUNTRY_SHARE)
        country_effect = rng.normal(0, 0.3, len(COUNTRIES))
        engagement = rng.normal(0, 1, users)
        spend = rng.normal(0, 1, users)
        purchase_logit = -3.9 + 0.5 * engagement + 0.8 * spend + country_effect[country] + 0.3 * os_index
        return cls(
            os_index=os_index,
            country=country,
            p_active=_sigmoid(-0.8 + 1.3 * engagement),
            # Engaged users buy more when active too; spend is a taste the profile shows only through past purchases.
            p_purchase_if_active=_sigmoid(purchase_logit),
        )

    @property
    def users(self) -> int:
        return len(self.os_index)

    @cached_property
    def p_purchase_in_horizon(self) -> np.ndarray:
        """P(at least one purchase in HORIZON_DAYS days): days are independent, a purchase a day at most."""
        return 1.0 - (1.0 - self.p_active * self.p_purchase_if_active) ** HORIZON_DAYS


@dataclass(frozen=True)
class UserDay:
    """One day's draws for every user: active, sessions, purchase, and the seconds of the day they happened."""

    active: np.ndarray
    sessions: np.ndarray
    purchased: np.ndarray
    first_second: np.ndarray
    purchase_second: np.ndarray


def draw_day(world: UserWorld, day: dt.date, seed: int) -> UserDay:
    rng = np.random.default_rng([seed, day.toordinal(), USER_STREAM])
    n = world.users
    active = rng.random(n) < world.p_active
    sessions = np.where(active, 1 + rng.poisson(1.5, n), 0)
    purchased = active & (rng.random(n) < world.p_purchase_if_active)
    first_second = rng.integers(0, 80_000, n)
    purchase_second = first_second + rng.integers(0, 6_000, n)
    return UserDay(active, sessions, purchased, first_second, purchase_second)


class UserDays:
    """Draws by day, each made once: a run of consecutive days reuses the 27 before each."""

    def __init__(self, world: UserWorld, seed: int) -> None:
        self.world, self.seed = world, seed
        self._days: dict[dt.date, UserDay] = {}

    def __getitem__(self, day: dt.date) -> UserDay:
        if day not in self._days:
            if len(self._days) > PURCHASE_DAYS + 2:  # keep the window a run of days reads
                self._days.pop(min(self._days))
            self._days[day] = draw_day(self.world, day, self.seed)
        return self._days[day]

    def tables(self, day: dt.date) -> dict[str, pa.Table]:
        world, today = self.world, self[day]
        earlier = [self[day - dt.timedelta(days=back)] for back in range(PURCHASE_DAYS)]
        sessions_7d = sum(d.sessions for d in earlier[:SESSION_DAYS])
        active_days_7d = sum(d.active.astype(np.int64) for d in earlier[:SESSION_DAYS])
        purchases_28d = sum(d.purchased.astype(np.int64) for d in earlier)
        rows = np.flatnonzero(today.active)
        rows = rows[np.argsort(today.first_second[rows], kind="stable")]
        day_start_us = (day - dt.date(1970, 1, 1)).days * 86_400 * 1_000_000
        profile_id = (day.toordinal() * 10_000_000 + np.arange(len(rows))).astype(np.int64)
        user_id = (rows + 1).astype(np.int64)
        profiles = pa.table(
            {
                "event_time": pa.array(day_start_us + today.first_second[rows] * 1_000_000, pa.timestamp("us")),
                "profile_id": profile_id,
                "user_id": user_id,
                "os": OS_NAMES[world.os_index[rows]],
                "country": COUNTRIES[world.country[rows]],
                "sessions_today": today.sessions[rows].astype(np.int32),
                "sessions_7d": sessions_7d[rows].astype(np.int32),
                "active_days_7d": active_days_7d[rows].astype(np.int32),
                "purchases_28d": purchases_28d[rows].astype(np.int32),
            }
        )
        bought = np.flatnonzero(today.purchased)
        bought = bought[np.argsort(today.purchase_second[bought], kind="stable")]
        value_rng = np.random.default_rng([self.seed, day.toordinal(), USER_STREAM, 1])
        purchases = pa.table(
            {
                "purchase_time": pa.array(day_start_us + today.purchase_second[bought] * 1_000_000, pa.timestamp("us")),
                "user_id": (bought + 1).astype(np.int64),
                "value": np.round(np.exp(value_rng.normal(3.0, 0.8, len(bought))), 2),
            }
        )
        truth = pa.table(
            {"profile_id": profile_id, "user_id": user_id, "p_purchase_7d": world.p_purchase_in_horizon[rows]}
        )
        return {"user_profiles": profiles, "user_purchases": purchases, "user_truth": truth}
