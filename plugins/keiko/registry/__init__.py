"""The model registry: versions with lineage, aliases (`production`) that move only on deploy, and the
per-model lease that serialises changes of production.

Two backends implement one contract (`Registry`, below): SQLAlchemy (`sql.py`: SQLite by default,
Postgres with the same code) and DynamoDB (`dynamodb.py`). `open_registry(url)` picks one from the URL;
neither backend's driver is imported until then, so importing this module stays cheap.
"""

from __future__ import annotations

import abc
import datetime as dt
import re
import time
import uuid
from dataclasses import asdict, dataclass, field
from typing import Any, Final

from keiko.errors import LeaseHeld, LeaseLost, RegistryError

# registered: may be deployed; rejected: failed its gates; historical: blessed, but never deployable.
STATUSES = ("registered", "rejected", "historical")


@dataclass(frozen=True)
class ModelVersion:
    model: str
    version: int
    status: str
    ds: str
    window_start: str
    window_end: str
    artifact_uri: str
    artifact_sha256: str
    code_version: str
    config_sha256: str
    features_sha256: str
    algorithm: str
    metrics: dict[str, Any]
    reason: str
    run_id: str
    created_at: str
    # How the run that made it was asked for: run_type, reason, window_days, deploy, algorithm overrides.
    trigger: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Registration:
    version: ModelVersion
    created: bool  # False when an identical registration already existed (a retry)


@dataclass(frozen=True)
class Lease:
    """The right to change one model's production, held by one process until it ends or expires.

    `token` is unique per acquisition: renewing, releasing and the alias moves it fences (move_alias's
    `lease`) all require it, so a holder whose lease expired and was taken cannot act on it. Times are
    Unix milliseconds by the clock of the process that wrote them (a lease lasts tens of seconds: the
    clocks of two hosts must agree to well within that, as NTP keeps them)."""

    model: str
    holder: str  # who, in words: "deploy of ctr v3 for run manual__2026-11-21 (pid 4711 on worker-1)"
    token: str
    acquired_ms: int
    expires_ms: int

    def since(self) -> str:
        return _iso(self.acquired_ms)

    def until(self) -> str:
        return _iso(self.expires_ms)

    def describe(self) -> str:
        return f"{self.holder}, since {self.since()} (lease until {self.until()})"


def _iso(ms: int) -> str:
    return dt.datetime.fromtimestamp(ms / 1000, dt.UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def now_ms() -> int:
    return time.time_ns() // 1_000_000


class _Unconditional:
    def __repr__(self) -> str:
        return "UNCONDITIONAL"


UNCONDITIONAL: Final = _Unconditional()  # move_alias(expected=...): move whatever the alias points at
Expected = int | _Unconditional | None  # what move_alias may expect the alias to be: a version, unset, anything


def require_known_status(status: str) -> None:
    if status not in STATUSES:
        raise RegistryError(f"unknown status {status!r}: expected one of {', '.join(STATUSES)}")


class Registry(abc.ABC):
    """What every registry backend guarantees; the contract tests in tests/unit/registry check it on each.

    Versions: numbered per model from 1, one more than the highest so far, never reused; distinct
    even when many processes register at once. A version's identity is (model, window_start,
    window_end, artifact_sha256): registering an identity again returns the existing version with
    `created=False` and stores nothing (the other fields of the retry are ignored).

    Aliases (`production`, ...): a per-model name pointing at one `registered` version. A move is
    atomic with its history entry, and can be made conditional on the alias's current version (a
    compare-and-set, "no alias yet" included) so two concurrent deploys cannot both win.

    Leases: at most one unexpired lease per model. Whoever changes production takes it first and keeps
    renewing it; a crashed holder's lease simply expires. A move fenced by a lease happens only while
    that lease is still held.

    Refusals raise `RegistryError` naming the model and version. Timestamps are ISO 8601 strings.
    """

    @abc.abstractmethod
    def register(
        self,
        *,
        model: str,
        ds: str,
        window_start: str,
        window_end: str,
        artifact_uri: str,
        artifact_sha256: str,
        code_version: str,
        config_sha256: str,
        features_sha256: str,
        algorithm: str,
        metrics: dict[str, Any],
        status: str = "registered",
        reason: str = "",
        run_id: str = "",
        trigger: dict[str, Any] | None = None,
    ) -> Registration:
        """Record a new version of `model` (the next number), or return the one with the same identity.

        `status` is one of STATUSES (else RegistryError). `metrics` is any JSON-serializable dict and
        reads back equal, floats included; so
        does `trigger` (the run's parameters, {} when None). Gives up with RegistryError if no number could be taken
        after a bounded number of attempts (sustained contention).
        """

    @abc.abstractmethod
    def get(self, model: str, version: int) -> ModelVersion:
        """Version `version` of `model`; RegistryError "<model> has no version <version>" if absent."""

    @abc.abstractmethod
    def list(self, model: str) -> list[ModelVersion]:
        """Every version of `model`, oldest (version 1) first; empty for an unknown model."""

    @abc.abstractmethod
    def alias(self, model: str, alias: str = "production") -> int | None:
        """The version `alias` points at, or None if it was never set."""

    @abc.abstractmethod
    def aliases_of(self, model: str) -> dict[str, int]:
        """Every alias of `model` and the version it points at."""

    @abc.abstractmethod
    def move_alias(
        self,
        model: str,
        version: int,
        *,
        alias: str = "production",
        expected: Expected = UNCONDITIONAL,
        note: str = "",
        lease: Lease | None = None,
    ) -> int | None:
        """Point `alias` at `version` and append a history entry (with `note`); returns the previous version.

        Only a `registered` version can be the target: otherwise RegistryError "<model> v<version> is
        <status>, it cannot become <alias>" (or "has no version" if it does not exist).
        `expected` makes the move a compare-and-set: a version, or None for "the alias is not set yet". If
        the alias does not point there, or moves between the check and the write, RegistryError containing
        "moved concurrently" and nothing changes. Unconditional moves (the default) that race another may
        also fail that way (never both win).
        `lease` fences the move: it happens atomically with a check that `lease` is still held (same token,
        not expired); otherwise LeaseLost and nothing changes.
        Moving an alias to the version it already points at changes nothing and records no history.
        """

    @abc.abstractmethod
    def previous(self, model: str, alias: str = "production") -> int | None:
        """The version `alias` pointed at before its last move (None before a second move)."""

    @abc.abstractmethod
    def history(self, model: str, alias: str = "production") -> list[dict[str, Any]]:
        """The moves of `alias`, oldest first: dicts with id (increasing with each move), model, alias,
        from_version (None for the first), to_version, at (ISO 8601) and note."""

    def acquire_lease(self, model: str, holder: str, seconds: float) -> Lease:
        """Take `model`'s lease for `seconds` if nobody holds an unexpired one; LeaseHeld (with the current
        lease) otherwise. Never waits: callers that want to wait retry (keiko.rollout.lease)."""
        for _attempt in range(5):
            now = now_ms()
            lease = Lease(model, holder, uuid.uuid4().hex, now, now + int(seconds * 1000))
            if self._take_lease(lease):
                return lease
            if (current := self.current_lease(model)) is not None:
                raise self.held(current)
            # held when we tried, expired since: try again
        raise RegistryError(f"could not take {model}'s lease after 5 attempts: it changed hands each time")

    @abc.abstractmethod
    def _take_lease(self, lease: Lease) -> bool:
        """Write `lease` if its model has no unexpired lease, atomically; whether it was written."""

    @abc.abstractmethod
    def renew_lease(self, lease: Lease, seconds: float) -> Lease:
        """Extend `lease` to `seconds` from now; LeaseLost if it expired or is no longer this token's."""

    @abc.abstractmethod
    def release_lease(self, lease: Lease) -> None:
        """Give `lease` up now; nothing happens if it is no longer held (expired, or taken since)."""

    @abc.abstractmethod
    def current_lease(self, model: str) -> Lease | None:
        """`model`'s unexpired lease, or None."""

    @staticmethod
    def held(current: Lease) -> LeaseHeld:
        """The refusal of a lease someone else holds, naming them (every backend's words)."""
        return LeaseHeld(f"{current.model}'s production is being changed by {current.describe()}", current)

    def lost(self, lease: Lease) -> LeaseLost:
        """The refusal of a lease that is no longer `lease`'s holder's, naming who has it now."""
        current = self.current_lease(lease.model)
        now = f"now held by {current.describe()}" if current else "nobody holds it now"
        return LeaseLost(f"{lease.model}'s lease of {lease.holder} expired at {lease.until()} or was taken; {now}")


_CREDENTIALS_IN_URL = re.compile(r"(://[^/:@]*:)[^/@]*@")


def redact(url: str) -> str:
    """`url` without its password, for error messages."""
    return _CREDENTIALS_IN_URL.sub(r"\1***@", url)


def open_registry(url: str) -> Registry:
    """The registry at `url`: `dynamodb://<table>[?region=<region>]`, or a SQLAlchemy URL (sqlite:///...,
    postgresql://...). A URL neither backend understands raises RegistryError naming it."""
    scheme, separator, _rest = url.partition("://")
    if not separator or not scheme:
        raise RegistryError(
            f"registry URL {redact(url)!r} is not a URL: expected dynamodb://<table> "
            "or a SQLAlchemy URL such as sqlite:///path/to/registry.db"
        )
    if scheme == "dynamodb":
        from keiko.registry.dynamodb import DynamoDBRegistry

        return DynamoDBRegistry.from_url(url)
    from keiko.registry.sql import SqlRegistry

    return SqlRegistry(url)


__all__ = [
    "STATUSES",
    "UNCONDITIONAL",
    "Lease",
    "LeaseHeld",
    "LeaseLost",
    "ModelVersion",
    "Registration",
    "Registry",
    "RegistryError",
    "open_registry",
]
