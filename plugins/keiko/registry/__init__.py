"""The model registry: versions with lineage, and aliases (`production`) that move only on deploy.

Two backends implement one contract (`Registry`, below): SQLAlchemy (`sql.py`: SQLite by default,
Postgres with the same code) and DynamoDB (`dynamodb.py`). `open_registry(url)` picks one from the URL;
neither backend's driver is imported until then, so importing this module stays cheap.
"""

from __future__ import annotations

import abc
import re
from dataclasses import asdict, dataclass, field
from typing import Any

from keiko.errors import RegistryError

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
    atomic with its history entry, and can be made conditional on the alias's current version so two
    concurrent deploys cannot both win.

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
        self, model: str, version: int, *, alias: str = "production", expected: int | None = None, note: str = ""
    ) -> int | None:
        """Point `alias` at `version` and append a history entry (with `note`); returns the previous version.

        Only a `registered` version can be the target: otherwise RegistryError "<model> v<version> is
        <status>, it cannot become <alias>" (or "has no version" if it does not exist).
        `expected` (a version) makes the move a compare-and-set: if the alias does not point at it, or
        moves between the check and the write, RegistryError containing "moved concurrently" and nothing
        changes. Without `expected`, a move that races another may also fail that way (never both win).
        Moving an alias to the version it already points at changes nothing and records no history.
        """

    @abc.abstractmethod
    def previous(self, model: str, alias: str = "production") -> int | None:
        """The version `alias` pointed at before its last move (None before a second move)."""

    @abc.abstractmethod
    def history(self, model: str, alias: str = "production") -> list[dict[str, Any]]:
        """The moves of `alias`, oldest first: dicts with id (increasing with each move), model, alias,
        from_version (None for the first), to_version, at (ISO 8601) and note."""


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
    "ModelVersion",
    "Registration",
    "Registry",
    "RegistryError",
    "open_registry",
]
