"""Changing what a model serves. `keiko.rollout.production` is the production path, the only code that
does; this module has the pieces its backends share.

A backend (`local.py`: replicas on loopback; `kubernetes.py`: a Deployment) moves the servers to a version
and, when anything fails, puts back the version they served before; the production path moves the
`production` alias only after it succeeds. Every step is recorded as a `RolloutEvent` (the change's record
and the per-replica timeline). Before each server it touches, a backend calls its `guard`, which raises
when the production lease was lost: from then on it touches nothing.
"""

from __future__ import annotations

import datetime as dt
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pyarrow as pa

from keiko.contract import GOLDEN_EXPECTED, RolloutEvent
from keiko.errors import KeikoError
from keiko.serving.split import TrafficSplit

SMOKE_ROWS = 16
SMOKE_TOLERANCE = 1e-6


class RolloutFailed(KeikoError):
    """The rollout stopped; `rolled_back` says whether every server is back on the previous version, `retryable`
    whether its cause was (an unreachable server: yes; wrong known answers, a misconfigured replica: no)."""

    def __init__(self, message: str, *, events: list[RolloutEvent], rolled_back: bool, retryable: bool = False) -> None:
        super().__init__(message)
        self.events = events
        self.rolled_back = rolled_back
        self.retryable = retryable


def json_rows(table: pa.Table) -> list[dict[str, Any]]:
    """Rows as a client sends them to /predict (timestamps as ISO strings)."""
    rows = table.to_pylist()
    for row in rows:
        for key, value in row.items():
            if isinstance(value, dt.datetime | dt.date):
                row[key] = value.isoformat()
    return rows


@dataclass(frozen=True)
class SmokeTest:
    """Requests with known answers: the candidate's offline predictions for rows of the test day."""

    rows: list[dict[str, Any]]
    expected: list[float]
    tolerance: float = SMOKE_TOLERANCE

    @classmethod
    def from_golden(cls, golden: pa.Table, limit: int = SMOKE_ROWS) -> SmokeTest:
        head = golden.slice(0, limit)
        return cls(json_rows(head.drop_columns([GOLDEN_EXPECTED])), head[GOLDEN_EXPECTED].to_pylist())

    @classmethod
    def from_batch(cls, scores: pa.Table, key: str, limit: int = SMOKE_ROWS) -> SmokeTest:
        """A batch model's known answers: keys of its batch (batch_score's table: key, score) and their scores."""
        head = scores.slice(0, limit)
        return cls([{key: value} for value in head[key].to_pylist()], head["score"].to_pylist())

    def check(self, answer: dict[str, Any], version: int) -> None:
        """Raise KeikoError unless `answer` (a /predict response) is `version`'s known answers."""
        if answer.get("model_version") != version:
            raise KeikoError(f"answered as v{answer.get('model_version')}, expected v{version}")
        got = answer.get("predictions") or []
        if len(got) != len(self.expected):
            raise KeikoError(f"{len(got)} predictions for {len(self.expected)} rows")
        worst = max(abs(g - e) for g, e in zip(got, self.expected, strict=True))
        if not worst <= self.tolerance:  # NaN compares false: fails too
            raise KeikoError(f"smoke predictions differ from the offline ones by {worst:.3g} (> {self.tolerance:g})")


def _unguarded() -> None:
    pass


class Rollout(ABC):
    """A backend: `run` moves the servers to a version, `roll_back` puts the previous one back; both
    record every step in `events` and say it in `log`, and call `guard` before touching a server."""

    def __init__(self, *, log: Callable[[str], None] = print, guard: Callable[[], None] = _unguarded) -> None:
        self.log = log
        self.guard = guard
        self.events: list[RolloutEvent] = []

    def serving_where(self, servers: int) -> str:
        """Where a version serves once `run` succeeded, in words for the change's message ("on ...")."""
        return f"{servers} replica(s)"

    def _record(self, replica: str, event: str, version: int | None, detail: str = "") -> None:
        self.events.append(RolloutEvent(replica=replica, event=event, version=version, detail=detail))
        self.log(f"{replica}: {event} v{version}" + (f" ({detail})" if detail else ""))

    @abstractmethod
    def run(self, version: int, previous: int | None) -> list[RolloutEvent]:
        """Move every server to `version`; on failure roll back to `previous` and raise RolloutFailed."""

    @abstractmethod
    def roll_back(self, previous: int | None) -> bool:
        """Put every server back on `previous`; False if that did not fully succeed."""

    @abstractmethod
    def canary(self) -> int | None:
        """The version the servers serve as a canary now; None when they serve one version. KeikoError when they
        disagree (a split change that failed half-way: its record says which server is where)."""

    @abstractmethod
    def split(self, split: TrafficSplit, stable: int) -> list[RolloutEvent]:
        """Have every server serve `split.version` beside `stable` to `split.weight` of the users; on failure put
        every server back on `stable` alone and raise RolloutFailed. `run(stable, ...)` ends a split: every
        user back on stable; `run(split.version, ...)` promotes the canary."""
