"""The Redis batch store: a hash per version, a string pointer per model, Lua scripts where it must be atomic.

Keys, all of a model's in one cluster slot (the hash tag `{<model>}`):

    keiko:batch:{<model>}:pointer             string: the serving version's number
    keiko:batch:{<model>}:v<version>          hash: key -> score (repr of the float)
    keiko:batch:{<model>}:v<version>:manifest string: the BatchManifest as JSON (no TTL: kept until `delete`,
                                              so that a lookup can tell an expired batch from a missing key)

`write` is one MULTI of HSET (the chunk) and PEXPIRE (the hash's TTL, so no key ever lives without one);
`seal` SETs the manifest and PEXPIREATs the hash to the manifest's expires_at. `lookup` is one script that
reads the pointer, the manifest and HMGETs the keys of the version the pointer names: one round trip, and no
switch can land in between. `switch` and `delete` are scripts too (check, then change). The scripts name
the pointer in KEYS and build the version's key names from it: those share the pointer's slot (hash tag),
which is what Redis Cluster requires of a script's keys.

`count` is HLEN: exact (a retried chunk rewrites the same fields).
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import json
import threading
import time
import weakref
from collections.abc import Sequence
from functools import cached_property
from typing import TYPE_CHECKING, Any

from keiko.batch_store import (
    BatchManifest,
    BatchNotSealed,
    BatchStore,
    Lookup,
    PointerMoved,
    answers,
    check_chunk,
    check_keys,
    check_manifest,
    check_model,
    check_version,
)
from keiko.errors import KeikoError

if TYPE_CHECKING:
    import numpy as np

HMGET_BATCH = 1000  # fields per HMGET inside the lookup script (Lua's unpack has a stack limit near 8000)

# KEYS[1]: the pointer. ARGV[1]: the model's version prefix ("keiko:batch:{m}:v"), ARGV[2..]: the keys.
# Returns {version or false, manifest JSON or false, {score or false, ...}}.
LOOKUP = """
local version = redis.call('GET', KEYS[1])
if not version then return {false, false, {}} end
local base = ARGV[1] .. version
local manifest = redis.call('GET', base .. ':manifest')
local scores = {}
for first = 2, #ARGV, BATCH do
  local last = math.min(first + BATCH - 1, #ARGV)
  local part = redis.call('HMGET', base, unpack(ARGV, first, last))
  for i = 1, #part do scores[#scores + 1] = part[i] end
end
return {version, manifest, scores}
""".replace("BATCH", str(HMGET_BATCH))

# KEYS[1]: the pointer. ARGV: prefix, expected ('' for none), version ('' to delete the pointer).
# Returns {'ok' | 'moved' | 'unsealed', the version found ('' for none)}.
SWITCH = """
local found = redis.call('GET', KEYS[1]) or ''
if found ~= ARGV[2] then return {'moved', found} end
if ARGV[3] == '' then
  redis.call('DEL', KEYS[1])
  return {'ok', found}
end
if redis.call('EXISTS', ARGV[1] .. ARGV[3] .. ':manifest') == 0 then return {'unsealed', found} end
redis.call('SET', KEYS[1], ARGV[3])
return {'ok', found}
"""

# KEYS[1]: the pointer. ARGV: prefix, version. Returns the keys deleted, or -1 if the pointer names the version.
DELETE = """
if redis.call('GET', KEYS[1]) == ARGV[2] then return -1 end
local base = ARGV[1] .. ARGV[2]
local keys = redis.call('HLEN', base)
redis.call('UNLINK', base, base .. ':manifest')
return keys
"""


def _prefix(model: str) -> str:
    return f"keiko:batch:{{{model}}}:"


def pointer_key(model: str) -> str:
    return f"{_prefix(model)}pointer"


def version_prefix(model: str) -> str:
    return f"{_prefix(model)}v"


def hash_key(model: str, version: int) -> str:
    return f"{version_prefix(model)}{version}"


def manifest_key(model: str, version: int) -> str:
    return f"{hash_key(model, version)}:manifest"


def encode_manifest(manifest: BatchManifest) -> str:
    return json.dumps(dataclasses.asdict(manifest))


@functools.lru_cache(maxsize=256)  # a lookup reads the serving manifest every call: parse each text once
def decode_manifest(text: str) -> BatchManifest:
    return BatchManifest(**json.loads(text))


class RedisBatchStore(BatchStore):
    """The batch store in Redis at `url` (a redis-py URL: redis://[[user]:password@]host[:port][/db], rediss://
    for TLS). Nothing connects until the first operation; the sync client is shared by threads, and each
    event loop that calls `alookup` gets its own redis.asyncio client."""

    def __init__(self, url: str, *, socket_timeout: float = 5.0) -> None:
        self.url = url
        self.socket_timeout = socket_timeout
        self._async: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, tuple[Any, Any]] = weakref.WeakKeyDictionary()
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"RedisBatchStore({self.describe()!r})"

    def describe(self) -> str:
        from keiko.registry import redact

        return redact(self.url)

    @cached_property
    def client(self) -> Any:
        import redis

        return redis.Redis.from_url(
            self.url, decode_responses=True, socket_timeout=self.socket_timeout, health_check_interval=30
        )

    @cached_property
    def _scripts(self) -> dict[str, Any]:
        return {name: self.client.register_script(text) for name, text in self._script_texts().items()}

    @staticmethod
    def _script_texts() -> dict[str, str]:
        return {"lookup": LOOKUP, "switch": SWITCH, "delete": DELETE}

    def _async_lookup_script(self) -> Any:
        """The lookup script bound to this event loop's redis.asyncio client (made on first use)."""
        loop = asyncio.get_running_loop()
        with self._lock:
            made = self._async.get(loop)
            if made is None:
                import redis.asyncio

                # A client's connections hold its loop: forget the clients of loops that are closed.
                for closed in [each for each in self._async if each.is_closed()]:
                    del self._async[closed]

                client = redis.asyncio.Redis.from_url(
                    self.url, decode_responses=True, socket_timeout=self.socket_timeout, health_check_interval=30
                )
                made = self._async[loop] = (client, client.register_script(LOOKUP))
        return made[1]

    # --- writes ---

    def write(
        self,
        model: str,
        version: int,
        keys: Sequence[str],
        scores: Sequence[float] | np.ndarray,
        *,
        ttl_seconds: float,
    ) -> int:
        check_model(model)
        check_version(version)
        keys, values = check_chunk(keys, scores, ttl_seconds)
        if not keys:
            return 0
        name = hash_key(model, version)
        with self.client.pipeline(transaction=True) as pipe:  # MULTI: no key without its TTL, even for a moment
            pipe.hset(name, mapping=dict(zip(keys, map(repr, values), strict=True)))
            pipe.pexpire(name, max(1, int(ttl_seconds * 1000)))
            pipe.execute()
        return len(keys)

    def seal(self, manifest: BatchManifest) -> None:
        check_manifest(manifest)
        with self.client.pipeline(transaction=True) as pipe:
            pipe.set(manifest_key(manifest.model, manifest.version), encode_manifest(manifest))
            pipe.pexpireat(hash_key(manifest.model, manifest.version), int(manifest.expires_at * 1000))
            pipe.execute()

    def switch(self, model: str, version: int | None, *, expected: int | None) -> None:
        check_model(model)
        for each in (version, expected):
            if each is not None:
                check_version(each)
        outcome, found = self._scripts["switch"](
            keys=[pointer_key(model)],
            args=[version_prefix(model), "" if expected is None else expected, "" if version is None else version],
        )
        if outcome == "moved":
            raise PointerMoved(
                f"{model}'s batch pointer names {_named(found or None)}, expected {_named(expected)}: "
                f"not moved to {_named(version)}"
            )
        if outcome == "unsealed":
            raise BatchNotSealed(f"{model} v{version} has no sealed batch (failed or incomplete): pointer not moved")

    def delete(self, model: str, version: int) -> int:
        check_model(model)
        check_version(version)
        deleted = self._scripts["delete"](keys=[pointer_key(model)], args=[version_prefix(model), version])
        if deleted < 0:
            raise KeikoError(f"{model} v{version} is the batch that serves: switch the pointer away before deleting it")
        return int(deleted)

    # --- reads ---

    def manifest(self, model: str, version: int) -> BatchManifest | None:
        text = self.client.get(manifest_key(check_model(model), check_version(version)))
        return None if text is None else decode_manifest(text)

    def count(self, model: str, version: int) -> int:
        return int(self.client.hlen(hash_key(check_model(model), check_version(version))))

    def pointer(self, model: str) -> BatchManifest | None:
        version, manifest, _ = self._scripts["lookup"](
            keys=[pointer_key(check_model(model))], args=[version_prefix(model)]
        )
        if version is None:
            return None
        return None if manifest is None else decode_manifest(manifest)

    def lookup(self, model: str, keys: Sequence[str], *, now: float | None = None) -> list[Lookup]:
        check_model(model)
        keys = check_keys(keys)
        if not keys:
            return []
        found = self._scripts["lookup"](keys=[pointer_key(model)], args=[version_prefix(model), *keys])
        return _answers(keys, found, time.time() if now is None else now)

    async def alookup(self, model: str, keys: Sequence[str], *, now: float | None = None) -> list[Lookup]:
        check_model(model)
        keys = check_keys(keys)
        if not keys:
            return []
        found = await self._async_lookup_script()(keys=[pointer_key(model)], args=[version_prefix(model), *keys])
        return _answers(keys, found, time.time() if now is None else now)

    def close(self) -> None:
        """Close the sync client's connections; the asyncio clients are forgotten (each belongs to its event
        loop: a loop's `aclose` is for code running in it)."""
        with self._lock:
            client = self.__dict__.pop("client", None)
            self.__dict__.pop("_scripts", None)
            self._async.clear()
        if client is not None:
            client.close()

    async def aclose(self) -> None:
        """Close this event loop's asyncio client, if it made one."""
        with self._lock:
            made = self._async.pop(asyncio.get_running_loop(), None)
        if made is not None:
            await made[0].aclose()


def _answers(keys: list[str], found: list[Any], now: float) -> list[Lookup]:
    version, manifest, scores = found
    return answers(
        keys,
        None if version is None else int(version),
        None if manifest is None else decode_manifest(manifest),
        [None if score is None else float(score) for score in scores],
        now,
    )


def _named(version: int | str | None) -> str:
    return "no version" if version is None else f"v{version}"
