"""On-call commands, one module each: `keiko why` (why.py), `keiko status` (status.py), `keiko rollback`
(rollback.py).

Each module gathers what it needs from the run records (keiko.runs), the artifact store and the registry,
and builds its text with pure functions of that data, which the unit tests call directly. The helpers
below are the words and times they share.
"""

from __future__ import annotations

import datetime as dt


def parse_time(iso: str) -> dt.datetime:
    moment = dt.datetime.fromisoformat(iso)
    return moment if moment.tzinfo else moment.replace(tzinfo=dt.UTC)


def when(iso: str | None) -> str:
    """An ISO 8601 time as people read it in a terminal: 2026-11-22 17:31 UTC."""
    if not iso:
        return "-"
    return parse_time(iso).astimezone(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")


def age(seconds: float) -> str:
    """A duration in its two largest units: 45s, 12m, 3h 05m, 2d 04h."""
    seconds = max(0, int(seconds))
    days, rest = divmod(seconds, 86_400)
    hours, rest = divmod(rest, 3_600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f"{days}d {hours:02d}h"
    if hours:
        return f"{hours}h {minutes:02d}m"
    return f"{minutes}m" if minutes else f"{secs}s"
