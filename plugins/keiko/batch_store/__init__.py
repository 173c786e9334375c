"""The key-value store of batch pre-inference: a batch model's scores (key -> score), served by version.

An offline stage scores every key and writes the scores under the new version, in chunks (`write`), beside
the old version's; then `seal` writes the version's manifest, and ONE pointer per model moves to it
(`switch`, a compare-and-set). A reader (`lookup`) reads the pointer and the keys of the version it names
at once, so a call's answers never mix versions; a batch that failed halfway has no manifest and cannot be
switched to (BatchNotSealed), so the old version keeps serving; a rollback moves the pointer back (the
old version's keys are still there until they expire or are deleted).

Two backends implement one contract (`BatchStore`, below): Redis (`redis_store.py`: locally, and any
Redis 7 or compatible service) and DynamoDB (`dynamodb_store.py`). `open_batch_store(url)` picks one from
the URL; neither backend's client is imported until then, and constructors do no I/O.
"""

from __future__ import annotations

import abc
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from keiko.errors import KeikoError

if TYPE_CHECKING:
    import numpy as np

MODEL_NAME = re.compile(r"[a-z][a-z0-9_]*")
MAX_KEY_LENGTH = 256
MAX_VERSION = 10**10 - 1  # as the registry's 10-digit version numbers
FALLBACKS = ("missing", "expired", "no_batch")
Fallback = Literal["missing", "expired", "no_batch"]


@dataclass(frozen=True)
class BatchManifest:
    """A version's batch, written by `seal` after all its chunks."""

    model: str
    version: int
    keys: int  # keys written (acknowledged by the store)
    prior: float  # the fallback score (training's label rate)
    scored_at: float  # epoch seconds the batch was scored
    expires_at: float  # epoch seconds; after it the batch's keys are expired (TTL)
    scores_uri: str = ""  # where the batch's (key, score) Parquet lives in the artifact store

    def expired(self, now: float) -> bool:
        return now > self.expires_at


@dataclass(frozen=True)
class Lookup:
    """One key's answer."""

    key: str
    score: float | None  # None: no batch score (see fallback)
    version: int | None  # the version whose batch answered (None: no pointer)
    scored_at: float | None
    # None: answered from the batch; "missing": the key is not in the version's batch; "expired": now is past
    # the version's expires_at; "no_batch": the model has no pointer.
    fallback: Fallback | None


class PointerMoved(KeikoError):
    """switch's compare-and-set failed: the pointer does not name the expected version."""


class BatchNotSealed(KeikoError):
    """switch to a version that has no manifest (a failed or incomplete batch)."""


# --- validation (shared by the backends) ---


def check_model(model: str) -> str:
    if not isinstance(model, str) or not MODEL_NAME.fullmatch(model):
        raise KeikoError(f"batch store: model name {model!r} is not [a-z][a-z0-9_]*")
    return model


def check_version(version: int) -> int:
    if isinstance(version, bool) or not isinstance(version, int) or not 1 <= version <= MAX_VERSION:
        raise KeikoError(f"batch store: version {version!r} is not an integer from 1 to {MAX_VERSION}")
    return version


def check_keys(keys: Sequence[str]) -> list[str]:
    if isinstance(keys, str):  # a string is a sequence of one-character keys: surely not what was meant
        raise KeikoError(f"batch store: keys must be a sequence of strings, not the string {keys[:40]!r}")
    keys = list(keys)
    for key in keys:
        if not isinstance(key, str) or not 0 < len(key) <= MAX_KEY_LENGTH:
            raise KeikoError(f"batch store: key {key!r} is not a non-empty string of at most {MAX_KEY_LENGTH} chars")
    return keys


def check_chunk(keys: Sequence[str], scores: Sequence[float] | np.ndarray, ttl_seconds: float) -> tuple[list, list]:
    """(keys, scores as Python floats) of a chunk to write; KeikoError, before anything is written, if any
    key is bad or repeated, a score is not a finite number, the lengths differ or the TTL is not positive."""
    import numpy as np

    keys = check_keys(keys)
    try:
        values = np.asarray(scores, dtype=np.float64)
    except (TypeError, ValueError) as error:
        raise KeikoError(f"batch store: scores are not numbers: {error}") from None
    if values.ndim != 1 or len(values) != len(keys):
        raise KeikoError(f"batch store: {len(keys)} keys but scores of shape {values.shape}")
    finite = np.isfinite(values)
    if not finite.all():
        bad = int(np.flatnonzero(~finite)[0])
        raise KeikoError(f"batch store: the score of key {keys[bad]!r} is {values[bad]}, not a finite number")
    if len(set(keys)) != len(keys):
        seen: set[str] = set()
        duplicate = next(k for k in keys if k in seen or seen.add(k))
        raise KeikoError(f"batch store: key {duplicate!r} appears twice in one chunk")
    if not (isinstance(ttl_seconds, int | float) and 0 < ttl_seconds < math.inf):
        raise KeikoError(f"batch store: ttl_seconds={ttl_seconds!r} is not a positive number of seconds")
    return keys, values.tolist()


def check_manifest(manifest: BatchManifest) -> BatchManifest:
    check_model(manifest.model)
    check_version(manifest.version)
    if isinstance(manifest.keys, bool) or not isinstance(manifest.keys, int) or manifest.keys < 0:
        raise KeikoError(f"batch manifest of {manifest.model} v{manifest.version}: keys={manifest.keys!r}")
    for name in ("prior", "scored_at", "expires_at"):
        value = getattr(manifest, name)
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
            raise KeikoError(
                f"batch manifest of {manifest.model} v{manifest.version}: {name}={value!r} is not a finite number"
            )
    return manifest


def answers(
    keys: list[str], version: int | None, manifest: BatchManifest | None, scores: list[float | None], now: float
) -> list[Lookup]:
    """The Lookups of `keys` from what one read found: the pointer's `version` (None: no pointer), its
    `manifest` and each key's score (None: absent)."""
    if version is None:
        return [Lookup(key, None, None, None, "no_batch") for key in keys]
    scored_at = None if manifest is None else manifest.scored_at
    if manifest is not None and manifest.expired(now):
        return [Lookup(key, None, version, scored_at, "expired") for key in keys]
    return [
        Lookup(key, score, version, scored_at, None if score is not None else "missing")
        for key, score in zip(keys, scores, strict=True)
    ]


class BatchStore(abc.ABC):
    """Batch scores by model and version, and each model's pointer to the version that serves.

    One instance may be shared by threads; `alookup` may be called from any number of event loops.
    """

    @abc.abstractmethod
    def write(
        self,
        model: str,
        version: int,
        keys: Sequence[str],
        scores: Sequence[float] | np.ndarray,
        *,
        ttl_seconds: float,
    ) -> int:
        """Write one chunk under `version`, beside any other version's keys; idempotent (a retried chunk
        rewrites the same keys). Every written key expires `ttl_seconds` after this write at the latest.
        Returns the number of keys written."""

    @abc.abstractmethod
    def seal(self, manifest: BatchManifest) -> None:
        """Write the version's manifest, after its last chunk: only a sealed version can be switched to."""

    @abc.abstractmethod
    def manifest(self, model: str, version: int) -> BatchManifest | None:
        """The version's manifest; None if it was never sealed (or was deleted)."""

    @abc.abstractmethod
    def count(self, model: str, version: int) -> int:
        """Keys stored under the version (each backend says how exactly)."""

    @abc.abstractmethod
    def pointer(self, model: str) -> BatchManifest | None:
        """The manifest of the version the model's pointer names; None when there is no pointer."""

    @abc.abstractmethod
    def switch(self, model: str, version: int | None, *, expected: int | None) -> None:
        """Move the pointer to `version` if it names `expected` now (None: no pointer), atomically; PointerMoved
        if it names another, BatchNotSealed if `version` has no manifest. `version` None deletes the pointer."""

    @abc.abstractmethod
    def lookup(self, model: str, keys: Sequence[str], *, now: float | None = None) -> list[Lookup]:
        """Each key's answer, in order, all from the one version the pointer named when read; `now` (epoch
        seconds, default the clock) decides expiry."""

    @abc.abstractmethod
    async def alookup(self, model: str, keys: Sequence[str], *, now: float | None = None) -> list[Lookup]:
        """`lookup` from an asyncio event loop."""

    @abc.abstractmethod
    def delete(self, model: str, version: int) -> int:
        """Delete a version's keys and manifest; the number of keys deleted. KeikoError if the pointer names it."""

    @abc.abstractmethod
    def describe(self) -> str:
        """Where the store is, for logs and status pages (no password): a URL."""

    @abc.abstractmethod
    def close(self) -> None:
        """Release connections (the store reconnects if used again)."""

    def __enter__(self) -> BatchStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def open_batch_store(url: str) -> BatchStore:
    """The batch store at `url`: `redis://...` or `rediss://...` (a redis-py URL), or
    `dynamodb://<table>[?region=<region>]`. KeikoError naming any other URL."""
    from keiko.registry import redact

    scheme = url.partition("://")[0] if isinstance(url, str) and "://" in url else ""
    if scheme in ("redis", "rediss"):
        from keiko.batch_store.redis_store import RedisBatchStore

        return RedisBatchStore(url)
    if scheme == "dynamodb":
        from keiko.batch_store.dynamodb_store import DynamoDBBatchStore

        return DynamoDBBatchStore.from_url(url)
    raise KeikoError(
        f"batch store URL {redact(str(url))!r}: expected redis://[[user]:password@]host[:port][/db], "
        "rediss://... (TLS) or dynamodb://<table>[?region=<region>]"
    )


__all__ = [
    "FALLBACKS",
    "BatchManifest",
    "BatchNotSealed",
    "BatchStore",
    "Lookup",
    "PointerMoved",
    "open_batch_store",
]
