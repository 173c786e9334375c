"""What the Redis batch store does beyond the contract: its key layout, TTLs that really fire, one round trip
a lookup (on the session's redis-server)."""

from __future__ import annotations

import time
import uuid

import pytest
import redis
from redis.crc import key_slot

from keiko.batch_store import BatchManifest, Lookup
from keiko.batch_store.redis_store import RedisBatchStore, hash_key, manifest_key, pointer_key


@pytest.fixture
def store(redis_server):
    with RedisBatchStore(redis_server) as opened:
        yield opened


@pytest.fixture
def raw(redis_server):
    client = redis.Redis.from_url(redis_server, decode_responses=True)
    yield client
    client.close()


@pytest.fixture
def model() -> str:
    return f"m{uuid.uuid4().hex[:12]}"


def test_a_models_keys_share_one_cluster_slot_and_the_documented_layout(store, raw, model):
    store.write(model, 1, ["a", "b"], [0.25, 0.5], ttl_seconds=60)
    now = time.time()
    store.seal(BatchManifest(model, 1, 2, 0.1, now, now + 600))
    store.switch(model, 1, expected=None)
    names = sorted(raw.scan_iter(match=f"keiko:batch:{{{model}}}:*"))
    assert names == sorted([pointer_key(model), hash_key(model, 1), manifest_key(model, 1)])
    assert names == sorted(
        [f"keiko:batch:{{{model}}}:pointer", f"keiko:batch:{{{model}}}:v1", f"keiko:batch:{{{model}}}:v1:manifest"]
    )
    assert len({key_slot(name.encode()) for name in names}) == 1
    assert raw.get(pointer_key(model)) == "1"
    assert raw.hgetall(hash_key(model, 1)) == {"a": "0.25", "b": "0.5"}
    assert raw.ttl(manifest_key(model, 1)) == -1  # kept: a lookup tells an expired batch from a missing key


def test_write_sets_the_hashs_ttl_and_seal_moves_it_to_the_manifests_expiry(store, raw, model):
    store.write(model, 1, ["a"], [0.5], ttl_seconds=30)
    assert 0 < raw.pttl(hash_key(model, 1)) <= 30_000
    now = time.time()
    store.seal(BatchManifest(model, 1, 1, 0.1, now, now + 3600))
    assert 3_590_000 < raw.pttl(hash_key(model, 1)) <= 3_600_000


def test_keys_whose_ttl_fired_are_gone_and_an_expired_batch_says_so(store, raw, model):
    store.write(model, 1, ["unsealed"], [0.5], ttl_seconds=1)  # written, never sealed
    store.write(model, 2, ["a", "b"], [0.25, 0.5], ttl_seconds=1)
    now = time.time()
    manifest = BatchManifest(model, 2, 2, 0.1, now, now + 1)
    store.seal(manifest)
    store.switch(model, 2, expected=None)
    assert [a.fallback for a in store.lookup(model, ["a", "b"])] == [None, None]
    time.sleep(1.5)
    assert store.count(model, 1) == 0 and store.count(model, 2) == 0  # Redis expired the hashes
    assert not raw.exists(hash_key(model, 2))
    assert store.lookup(model, ["a", "c"]) == [
        Lookup("a", None, 2, manifest.scored_at, "expired"),
        Lookup("c", None, 2, manifest.scored_at, "expired"),
    ]


def test_a_lookup_is_one_script_call(store, raw, model):
    store.write(model, 1, ["a", "b"], [0.25, 0.5], ttl_seconds=60)
    now = time.time()
    store.seal(BatchManifest(model, 1, 2, 0.1, now, now + 600))
    store.switch(model, 1, expected=None)
    store.lookup(model, ["a"])  # the script is loaded
    raw.config_resetstat()
    store.lookup(model, ["a", "b", "c"])
    stats = raw.info("commandstats")
    calls = {name.removeprefix("cmdstat_"): stat["calls"] for name, stat in stats.items()}
    # EVALSHA from the client; GET (pointer, manifest) and HMGET inside the script. CONFIG is this test's.
    assert calls == {"evalsha": 1, "get": 2, "hmget": 1, "config|resetstat": 1}


def test_a_store_reconnects_after_close(store, model):
    store.write(model, 1, ["a"], [0.5], ttl_seconds=60)
    store.close()
    assert store.count(model, 1) == 1
