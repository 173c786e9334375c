"""The batch store contract (keiko.batch_store.BatchStore), checked on every backend.

Redis runs on the session's redis-server (the `redis_server` fixture), each test with its own model names;
DynamoDB on the session's moto server, one fresh table per test. The races run their threads with
separate store instances (as separate processes would), and switch threads often while they run.
"""

from __future__ import annotations

import asyncio
import math
import sys
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from keiko.batch_store import (
    BatchManifest,
    BatchNotSealed,
    BatchStore,
    Lookup,
    PointerMoved,
    open_batch_store,
)
from keiko.errors import KeikoError

HOUR = 3600.0


@pytest.fixture(
    params=[pytest.param("redis", marks=pytest.mark.server), pytest.param("dynamodb", marks=pytest.mark.aws)]
)
def store_url(request: pytest.FixtureRequest) -> str:
    if request.param == "redis":
        return request.getfixturevalue("redis_server")
    request.getfixturevalue("aws")  # keiko talks to the moto server
    return f"dynamodb://keiko-batch-{uuid.uuid4().hex}"


@pytest.fixture
def store(store_url: str):
    with open_batch_store(store_url) as opened:
        yield opened


@pytest.fixture
def model() -> str:
    """A model name of this test alone (the Redis server is the session's)."""
    return f"m{uuid.uuid4().hex[:12]}"


def scores_of(version: int, n: int) -> dict[str, float]:
    """`n` keys' scores in `version`: each tells the version it was written by (version + a fraction)."""
    return {f"u{i:07d}": version + (i + 1) / (n + 2) for i in range(n)}


def publish(
    store: BatchStore,
    model: str,
    version: int,
    scores: dict[str, float],
    *,
    chunk: int = 1000,
    ttl: float = HOUR,
    scored_at: float | None = None,
) -> BatchManifest:
    """Write `scores` under `version` in chunks, then seal it; its manifest."""
    keys = list(scores)
    written = sum(
        store.write(model, version, keys[i : i + chunk], [scores[k] for k in keys[i : i + chunk]], ttl_seconds=ttl)
        for i in range(0, len(keys), chunk)
    )
    assert written == len(keys)
    scored_at = time.time() if scored_at is None else scored_at
    manifest = BatchManifest(model, version, written, 0.05, scored_at, scored_at + ttl, f"file:///s/{version}.parquet")
    store.seal(manifest)
    return manifest


def versions_in(answers: list[Lookup]) -> set[int | None]:
    return {answer.version for answer in answers}


# --- reading what was published ---


def test_lookup_answers_from_the_version_the_pointer_names(store, model):
    assert store.lookup(model, ["u0000000"]) == [Lookup("u0000000", None, None, None, "no_batch")]
    assert store.pointer(model) is None
    scores = scores_of(1, 50)
    manifest = publish(store, model, 1, scores)
    assert store.lookup(model, ["u0000000"])[0].fallback == "no_batch", "sealed, but not switched to"
    assert store.manifest(model, 1) == manifest
    assert store.manifest(model, 2) is None
    assert store.count(model, 1) == 50

    store.switch(model, 1, expected=None)
    assert store.pointer(model) == manifest
    answers = store.lookup(model, ["u0000003", "nobody", "u0000049", "u0000003"])
    assert answers == [
        Lookup("u0000003", scores["u0000003"], 1, manifest.scored_at, None),
        Lookup("nobody", None, 1, manifest.scored_at, "missing"),
        Lookup("u0000049", scores["u0000049"], 1, manifest.scored_at, None),
        Lookup("u0000003", scores["u0000003"], 1, manifest.scored_at, None),
    ]
    assert store.lookup(model, []) == []
    assert store.lookup(f"{model}_other", ["u0000003"])[0].fallback == "no_batch"  # models do not share


def test_scores_read_back_exactly_and_numpy_arrays_are_accepted(store, model):
    keys = [f"k{i}" for i in range(7)]
    values = np.array([0.0, 1e-5, 0.1, 1 / 3, 0.999999999999, 123456.789, -2.5e-7])
    assert store.write(model, 1, keys, values, ttl_seconds=HOUR) == 7
    store.seal(BatchManifest(model, 1, 7, 0.1, time.time(), time.time() + HOUR))
    store.switch(model, 1, expected=None)
    assert [a.score for a in store.lookup(model, keys)] == values.tolist()


def test_a_lookup_of_thousands_of_keys_answers_each_in_order(store, model):
    scores = scores_of(1, 2500)
    publish(store, model, 1, scores, chunk=1000)
    store.switch(model, 1, expected=None)
    keys = [*reversed(scores), "nobody", *list(scores)[:10]]  # beyond one request's batch (HMGET, BatchGetItem)
    answers = store.lookup(model, keys)
    assert [a.key for a in answers] == keys
    assert [a.score for a in answers] == [scores.get(k) for k in keys]
    assert versions_in(answers) == {1}


def test_a_retried_chunk_rewrites_the_same_keys(store, model, store_url):
    scores = scores_of(1, 30)
    keys, values = list(scores), list(scores.values())
    store.write(model, 1, keys, values, ttl_seconds=HOUR)
    store.write(model, 1, keys[:10], values[:10], ttl_seconds=HOUR)  # a retry of the first part
    # Redis counts the hash's fields; DynamoDB, before the seal, the keys its writes acknowledged (a retried
    # chunk again), and the manifest's keys once sealed.
    assert store.count(model, 1) == (30 if store_url.startswith("redis") else 40)
    store.seal(BatchManifest(model, 1, 30, 0.05, time.time(), time.time() + HOUR))
    store.switch(model, 1, expected=None)
    assert [a.score for a in store.lookup(model, keys)] == values
    assert store.count(model, 1) == 30


# --- switching ---


def test_a_version_being_written_is_not_served_until_the_switch(store, model):
    v1, v2 = scores_of(1, 400), scores_of(2, 400)
    m1 = publish(store, model, 1, v1)
    store.switch(model, 1, expected=None)
    keys = list(v2)
    store.write(model, 2, keys[:200], [v2[k] for k in keys[:200]], ttl_seconds=HOUR)  # half of v2
    answers = store.lookup(model, keys)
    assert versions_in(answers) == {1} and [a.score for a in answers] == list(v1.values())
    store.write(model, 2, keys[200:], [v2[k] for k in keys[200:]], ttl_seconds=HOUR)
    m2 = BatchManifest(model, 2, 400, 0.05, time.time(), time.time() + HOUR)
    store.seal(m2)
    assert versions_in(store.lookup(model, keys)) == {1}, "sealed, not switched"
    store.switch(model, 2, expected=1)
    answers = store.lookup(model, keys)
    assert versions_in(answers) == {2} and [a.score for a in answers] == list(v2.values())
    assert {a.scored_at for a in answers} == {m2.scored_at} != {m1.scored_at}


def test_no_lookup_ever_mixes_versions_while_versions_are_written_and_switched(store_url, model):
    """A reader looks up many keys, call after call, while a writer writes versions in chunks and switches
    to each: every call's answers come from one version, with that version's scores."""
    n, versions = 300, 6
    expected = {v: scores_of(v, n) for v in range(1, versions + 1)}
    keys = list(expected[1])
    writer, reader = open_batch_store(store_url), open_batch_store(store_url)
    publish(writer, model, 1, expected[1], chunk=100)
    writer.switch(model, 1, expected=None)
    done = threading.Event()
    calls: list[list[Lookup]] = []

    def read() -> None:
        while not done.is_set():
            calls.append(reader.lookup(model, keys))

    def a_whole_call_later() -> None:
        mark, deadline = len(calls), time.monotonic() + 60
        while len(calls) < mark + 2 and thread.is_alive() and time.monotonic() < deadline:
            time.sleep(0.005)

    switch_interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-5)
    thread = threading.Thread(target=read)
    thread.start()
    try:
        a_whole_call_later()
        for version in range(2, versions + 1):
            publish(writer, model, version, expected[version], chunk=50)
            writer.switch(model, version, expected=version - 1)
            a_whole_call_later()
    finally:
        done.set()
        thread.join(timeout=120)
        sys.setswitchinterval(switch_interval)
        writer.close()
        reader.close()
    assert len(calls) >= versions
    seen = set()
    for answers in calls:
        (version,) = versions_in(answers)  # one version a call, never a mix
        assert [a.score for a in answers] == list(expected[version].values())
        assert all(a.fallback is None for a in answers)
        seen.add(version)
    assert seen == set(expected)


def test_a_failed_batch_cannot_be_switched_to_and_the_old_one_keeps_serving(store, model):
    publish(store, model, 1, scores_of(1, 20))
    store.switch(model, 1, expected=None)
    v2 = scores_of(2, 20)
    store.write(model, 2, list(v2)[:10], list(v2.values())[:10], ttl_seconds=HOUR)  # then the batch failed
    with pytest.raises(BatchNotSealed, match="v2"):
        store.switch(model, 2, expected=1)
    assert store.pointer(model).version == 1
    assert versions_in(store.lookup(model, list(v2))) == {1}
    with pytest.raises(BatchNotSealed):
        store.switch(f"{model}_new", 1, expected=None)  # no manifest at all


def test_a_stale_expected_is_refused_naming_both_versions(store, model):
    for version in (1, 2, 3):
        publish(store, model, version, scores_of(version, 5))
    with pytest.raises(PointerMoved, match="no version"):
        store.switch(model, 1, expected=2)  # no pointer yet
    store.switch(model, 1, expected=None)
    with pytest.raises(PointerMoved, match=r"names v1, expected no version"):
        store.switch(model, 2, expected=None)
    store.switch(model, 2, expected=1)
    with pytest.raises(PointerMoved, match=r"names v2, expected v1: not moved to v3"):
        store.switch(model, 3, expected=1)
    with pytest.raises(PointerMoved, match=r"names v2, expected v1"):
        store.switch(model, None, expected=1)
    assert store.pointer(model).version == 2
    store.switch(model, 2, expected=2)  # to where it is: nothing changes
    assert store.pointer(model).version == 2


def test_of_concurrent_switches_from_the_same_version_exactly_one_wins(store_url, model):
    racers = 8
    setup = open_batch_store(store_url)
    for version in range(1, racers + 2):
        publish(setup, model, version, scores_of(version, 3))
    setup.switch(model, 1, expected=None)
    stores = [open_batch_store(store_url) for _ in range(racers)]
    for each in stores:
        each.pointer(model)  # connected (and the table found) before the start: only the switches race
    start = threading.Barrier(racers)

    def switch(i: int) -> int | PointerMoved:
        start.wait(timeout=60)
        try:
            stores[i].switch(model, i + 2, expected=1)
        except PointerMoved as error:
            return error
        return i + 2

    switch_interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-5)
    try:
        with ThreadPoolExecutor(max_workers=racers) as pool:
            outcomes = list(pool.map(switch, range(racers)))
    finally:
        sys.setswitchinterval(switch_interval)
    winners = [o for o in outcomes if isinstance(o, int)]
    assert len(winners) == 1, outcomes
    assert setup.pointer(model).version == winners[0]
    assert all(f"names v{winners[0]}, expected v1" in str(o) for o in outcomes if isinstance(o, PointerMoved))
    for each in [setup, *stores]:
        each.close()


def test_a_rollback_serves_the_old_versions_scores_again(store, model):
    v1, v2 = scores_of(1, 40), scores_of(2, 40)
    m1 = publish(store, model, 1, v1)
    publish(store, model, 2, v2)
    store.switch(model, 1, expected=None)
    store.switch(model, 2, expected=1)
    assert [a.score for a in store.lookup(model, list(v2))] == list(v2.values())
    store.switch(model, 1, expected=2)  # the rollback: v1's keys were kept beside v2's
    answers = store.lookup(model, list(v1))
    assert [a.score for a in answers] == list(v1.values()) and versions_in(answers) == {1}
    assert store.pointer(model) == m1
    store.switch(model, None, expected=1)  # back to no batch at all
    assert store.pointer(model) is None
    assert store.lookup(model, ["u0000001"])[0].fallback == "no_batch"


# --- expiry ---


def test_keys_past_the_batchs_expiry_are_reported_expired(store, model):
    manifest = publish(store, model, 1, scores_of(1, 10), ttl=60)
    store.switch(model, 1, expected=None)
    assert store.lookup(model, ["u0000001"], now=manifest.expires_at - 1)[0].fallback is None
    later = store.lookup(model, ["u0000001", "nobody"], now=manifest.expires_at + 1)
    assert later == [
        Lookup("u0000001", None, 1, manifest.scored_at, "expired"),
        Lookup("nobody", None, 1, manifest.scored_at, "expired"),
    ]
    assert asyncio.run(store.alookup(model, ["u0000001"], now=manifest.expires_at + 1)) == later[:1]


# --- bad input ---


@pytest.mark.parametrize(
    ("keys", "scores", "message"),
    [
        (["ok", ""], [0.1, 0.2], "key '' is not a non-empty string"),
        (["ok", "x" * 257], [0.1, 0.2], "is not a non-empty string of at most 256"),
        (["ok", 7], [0.1, 0.2], "key 7 is not"),
        (["ok", "bad"], [0.1, math.nan], "the score of key 'bad' is nan"),
        (["ok", "bad"], [0.1, math.inf], "the score of key 'bad' is inf"),
        (["ok", "bad"], [0.1, "high"], "scores are not numbers"),
        (["ok", "bad"], [0.1], "2 keys but scores of shape"),
        (["ok", "twice", "twice"], [0.1, 0.2, 0.3], "key 'twice' appears twice"),
        ("ok", [0.1, 0.2], "not the string 'ok'"),
    ],
)
def test_a_bad_chunk_is_refused_and_nothing_is_written(store, model, keys, scores, message):
    with pytest.raises(KeikoError, match=message):
        store.write(model, 1, keys, scores, ttl_seconds=HOUR)
    assert store.count(model, 1) == 0
    assert store.manifest(model, 1) is None


@pytest.mark.parametrize("name", ["", "Ctr", "1ctr", "ctr-v2", "ctr:x", "c{t}r", None])
def test_a_bad_model_name_is_refused(store, name):
    with pytest.raises(KeikoError, match="is not \\[a-z\\]\\[a-z0-9_\\]\\*"):
        store.write(name, 1, ["a"], [0.5], ttl_seconds=HOUR)
    for call in (
        lambda: store.lookup(name, ["a"]),
        lambda: store.switch(name, 1, expected=None),
        lambda: store.pointer(name),
        lambda: store.count(name, 1),
    ):
        with pytest.raises(KeikoError, match="model name"):
            call()


def test_bad_versions_ttls_and_manifests_are_refused(store, model):
    for version in (0, -1, True, 1.0, "1", 10**10):
        with pytest.raises(KeikoError, match="is not an integer from 1"):
            store.write(model, version, ["a"], [0.5], ttl_seconds=HOUR)
    for ttl in (0, -1, math.inf, math.nan):
        with pytest.raises(KeikoError, match="ttl_seconds"):
            store.write(model, 1, ["a"], [0.5], ttl_seconds=ttl)
    with pytest.raises(KeikoError, match="prior=nan"):
        store.seal(BatchManifest(model, 1, 1, math.nan, time.time(), time.time() + HOUR))
    with pytest.raises(KeikoError, match="keys=-1"):
        store.seal(BatchManifest(model, 1, -1, 0.1, time.time(), time.time() + HOUR))
    with pytest.raises(KeikoError, match="key '' is not"):
        store.lookup(model, ["a", ""])
    assert store.count(model, 1) == 0 and store.manifest(model, 1) is None


# --- asyncio ---


def test_alookup_answers_as_lookup(store, model):
    keys = ["u0000001", "nobody", "u0000007"]
    assert asyncio.run(store.alookup(model, keys)) == store.lookup(model, keys)  # no batch yet
    publish(store, model, 1, scores_of(1, 10))
    store.switch(model, 1, expected=None)

    async def many() -> list[list[Lookup]]:
        return await asyncio.gather(*(store.alookup(model, keys) for _ in range(20)))

    for _ in range(2):  # each asyncio.run is another event loop: the store follows
        assert asyncio.run(many()) == [store.lookup(model, keys)] * 20
    with pytest.raises(KeikoError, match="key '' is not"):
        asyncio.run(store.alookup(model, [""]))


# --- deleting ---


def test_delete_removes_a_version_but_never_the_serving_one(store, model):
    publish(store, model, 1, scores_of(1, 60))
    publish(store, model, 2, scores_of(2, 60))
    store.switch(model, 2, expected=None)
    with pytest.raises(KeikoError, match="v2 is the batch that serves"):
        store.delete(model, 2)
    assert store.delete(model, 1) == 60
    assert store.manifest(model, 1) is None and store.count(model, 1) == 0
    with pytest.raises(BatchNotSealed):
        store.switch(model, 1, expected=2)
    assert store.delete(model, 1) == 0  # again: nothing left
    assert store.delete(model, 9) == 0
    assert [a.score for a in store.lookup(model, ["u0000000"])] == [scores_of(2, 60)["u0000000"]]


# --- opening ---


@pytest.mark.parametrize(
    "url",
    [
        "redis:/127.0.0.1",
        "memcached://127.0.0.1:11211",
        "sqlite:///scores.db",
        "127.0.0.1:6379",
        "",
        "dynamodb://ab",
        "dynamodb://table?colour=blue",
        "dynamodb://table/path",
    ],
)
def test_a_bad_url_is_refused_naming_it(url):
    with pytest.raises(KeikoError, match="batch store URL") as refused:
        open_batch_store(url)
    assert repr(url) in str(refused.value)


def test_opening_does_no_io_and_hides_passwords():
    from keiko.batch_store.dynamodb_store import DynamoDBBatchStore
    from keiko.batch_store.redis_store import RedisBatchStore

    unreachable = open_batch_store("redis://:s3cret@192.0.2.1:1/0")  # TEST-NET: nothing listens
    assert isinstance(unreachable, RedisBatchStore) and "s3cret" not in repr(unreachable)
    assert unreachable.describe() == "redis://:***@192.0.2.1:1/0"
    assert isinstance(open_batch_store("rediss://cache.example:6380/1"), RedisBatchStore)
    table = open_batch_store("dynamodb://keiko-batch-scores?region=eu-west-1")
    assert isinstance(table, DynamoDBBatchStore) and (table.table, table.region) == ("keiko-batch-scores", "eu-west-1")
    assert table.describe() == "dynamodb://keiko-batch-scores?region=eu-west-1"
    with pytest.raises(KeikoError, match="batch store URL 'postgresql://u:\\*\\*\\*@db/x'"):
        open_batch_store("postgresql://u:pw@db/x")


def test_the_resources_open_the_configured_store(monkeypatch):
    from keiko.batch_store.dynamodb_store import DynamoDBBatchStore
    from keiko.batch_store.redis_store import RedisBatchStore
    from keiko.config import settings
    from keiko.resources import Resources

    monkeypatch.delenv("KEIKO_BATCH_STORE_URL", raising=False)
    assert settings().batch_store_url == "redis://127.0.0.1:6390/0"
    assert isinstance(Resources().batch_store, RedisBatchStore)
    monkeypatch.setenv("KEIKO_BATCH_STORE_URL", "dynamodb://keiko-batch-scores")
    assert isinstance(Resources().batch_store, DynamoDBBatchStore)
