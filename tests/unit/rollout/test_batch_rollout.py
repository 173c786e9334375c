"""A batch model's rollout (keiko.rollout.batch.BatchRollout): production is the batch store's pointer, moved by
compare-and-set, checked by looking up the batch's keys through it, and moved back when they do not answer as the
batch scored them. On the session's redis-server; through the production path with a SQLite registry too."""

from __future__ import annotations

import json
import time
import uuid
from pathlib import Path

import pyarrow as pa
import pytest

from keiko.batch_store import BatchManifest, BatchStore
from keiko.batch_store.redis_store import RedisBatchStore
from keiko.modeldef import load_model
from keiko.resources import Resources
from keiko.rollout import RolloutFailed, SmokeTest
from keiko.rollout.batch import BatchRollout
from keiko.rollout.production import Change, ProductionPath, open_backend
from keiko.storage import ArtifactStore

pytestmark = pytest.mark.server

KEY = "user_id"
KEYS = 40  # more than the 16 the check samples
HOUR = 3600.0


def scores_of(version: int) -> dict[int, float]:
    """Each user's score in `version`'s batch: distinct per version, so an answer tells its version."""
    return {user: round(0.1 * version + user / 1000, 6) for user in range(1, KEYS + 1)}


def publish(
    store: BatchStore,
    artifacts: ArtifactStore,
    model: str,
    version: int,
    *,
    stored: dict[int, float] | None = None,
    seal: bool = True,
) -> BatchManifest | None:
    """`version`'s batch as batch_score leaves it: its (user_id, score) Parquet in the artifact store, the same
    scores in the batch store (or `stored` instead), sealed unless `seal` is False."""
    scores = scores_of(version)
    uri = f"{artifacts.root_uri}/{model}/v{version}/batch.parquet"
    artifacts.write_table(uri, pa.table({KEY: pa.array(list(scores), pa.int64()), "score": list(scores.values())}))
    written = stored if stored is not None else scores
    store.write(model, version, [str(k) for k in written], list(written.values()), ttl_seconds=HOUR)
    if not seal:
        return None
    now = time.time()
    manifest = BatchManifest(model, version, len(written), 0.05, now, now + HOUR, uri)
    store.seal(manifest)
    return manifest


def answered_versions(store: BatchStore, model: str) -> tuple[set[int | None], list[float | None]]:
    answers = store.lookup(model, [str(user) for user in range(1, KEYS + 1)])
    return {a.version for a in answers}, [a.score for a in answers]


@pytest.fixture
def store(redis_server):
    with RedisBatchStore(redis_server) as opened:
        yield opened


@pytest.fixture
def artifacts(tmp_path) -> ArtifactStore:
    return ArtifactStore((tmp_path / "artifacts").as_uri())


@pytest.fixture
def model() -> str:
    return f"m{uuid.uuid4().hex[:12]}"


@pytest.fixture
def rollout(store, artifacts, model) -> BatchRollout:
    return BatchRollout(model=model, key=KEY, store=store, artifacts=artifacts, log=lambda _: None)


def test_a_first_deploy_switches_from_no_pointer_and_checks_the_batch(store, artifacts, model, rollout):
    publish(store, artifacts, model, 1)
    assert rollout.serving() is None
    events = rollout.run(1, None)
    assert rollout.serving() == 1
    assert [e.event for e in events] == ["switched", "checked"]
    assert events[0].detail == "first batch"
    versions, scores = answered_versions(store, model)
    assert versions == {1} and scores == list(scores_of(1).values())


def test_a_deploy_switches_v1_to_v2_and_lookups_answer_v2(store, artifacts, model, rollout):
    publish(store, artifacts, model, 1)
    publish(store, artifacts, model, 2)
    rollout.run(1, None)
    rollout.events = []
    events = rollout.run(2, 1)
    assert (events[0].event, events[0].detail) == ("switched", "from v1")
    assert store.pointer(model).version == 2
    versions, scores = answered_versions(store, model)
    assert versions == {2} and scores == list(scores_of(2).values())


def test_an_unsealed_batch_is_refused_and_the_old_one_keeps_serving(store, artifacts, model, rollout):
    publish(store, artifacts, model, 1)
    publish(store, artifacts, model, 2)
    rollout.run(1, None)
    rollout.run(2, 1)
    publish(store, artifacts, model, 3, seal=False)  # a batch_score that failed before its seal
    with pytest.raises(RolloutFailed, match="v3") as failed:
        rollout.run(3, 2)
    assert "no sealed batch" in str(failed.value)
    assert store.pointer(model).version == 2
    versions, scores = answered_versions(store, model)
    assert versions == {2} and scores == list(scores_of(2).values())


def test_a_batch_whose_stored_scores_differ_from_its_parquet_fails_the_check_and_is_switched_back(
    store, artifacts, model, rollout
):
    publish(store, artifacts, model, 1)
    wrong = {user: score / 2 for user, score in scores_of(2).items()}  # the store holds other scores than scored
    publish(store, artifacts, model, 2, stored=wrong)
    rollout.run(1, None)
    with pytest.raises(RolloutFailed, match="v2's batch: lookups differ from the batch's scores") as failed:
        rollout.run(2, 1)
    assert failed.value.rolled_back is True
    assert [e.event for e in failed.value.events][-3:] == ["switched", "check failed", "rolled back"]
    assert store.pointer(model).version == 1
    assert answered_versions(store, model) == ({1}, list(scores_of(1).values()))


def test_a_first_batch_that_fails_the_check_leaves_no_pointer(store, artifacts, model, rollout):
    publish(store, artifacts, model, 1, stored={user: 0.5 for user in scores_of(1)})
    with pytest.raises(RolloutFailed) as failed:
        rollout.run(1, None)
    assert failed.value.rolled_back is True
    assert store.pointer(model) is None


def test_a_stale_previous_is_refused_and_the_pointer_stays_where_someone_else_moved_it(
    store, artifacts, model, rollout
):
    for version in (1, 2, 3):
        publish(store, artifacts, model, version)
    rollout.run(1, None)
    store.switch(model, 2, expected=1)  # another change moved it meanwhile
    with pytest.raises(RolloutFailed, match="names v2, expected v1: not moved to v3"):
        rollout.run(3, 1)
    assert store.pointer(model).version == 2


def test_roll_back_moves_the_pointer_back_and_a_batch_never_splits(store, artifacts, model, rollout):
    from keiko.serving.split import TrafficSplit

    publish(store, artifacts, model, 1)
    publish(store, artifacts, model, 2)
    rollout.run(1, None)
    rollout.run(2, 1)
    assert rollout.roll_back(1) is True
    assert store.pointer(model).version == 1
    assert rollout.canary() is None
    with pytest.raises(RolloutFailed, match="never as a canary"):
        rollout.split(TrafficSplit(2, 0.1, "salt"), 1)
    assert store.pointer(model).version == 1


# --- through the production path ---


@pytest.fixture
def user_value_home(tmp_path, monkeypatch, redis_server):
    """An empty KEIKO_HOME with a SQLite registry holding user_value v1..v3 (registered), the batch store the
    session's redis-server, and no batch of user_value in it."""
    import redis

    home = tmp_path / "home"
    monkeypatch.setenv("KEIKO_HOME", str(home))
    monkeypatch.setenv("KEIKO_WAREHOUSE_DIR", str(home / "warehouse"))
    monkeypatch.setenv("KEIKO_BATCH_STORE_URL", redis_server)
    monkeypatch.setenv("KEIKO_DEPLOY_BACKEND", "local")
    monkeypatch.setenv("KEIKO_LEASE_WAIT_SECONDS", "0.6")
    client = redis.Redis.from_url(redis_server)
    for name in client.scan_iter(match="keiko:batch:{user_value}:*"):
        client.delete(name)
    client.close()
    resources = Resources()
    assert resources.settings.registry_url.startswith("sqlite")
    for i in range(3):
        resources.registry.register(
            model="user_value", ds="2026-11-21", window_start=f"2026-11-0{i + 1}", window_end="2026-11-21",
            artifact_uri="file:///m.cbm", artifact_sha256=f"{i}", code_version="0", config_sha256="c",
            features_sha256="f", algorithm="catboost", metrics={},
        )  # fmt: skip
    return home, resources


def a_change(tmp_path: Path, action: str, version: int, expected: int | None) -> Change:
    return Change(
        action=action, version=version, expected=expected, smoke=SmokeTest([], []), requested_by=f"test {action}",
        reason="test", note=f"test {action} to v{version}", record_uri=(tmp_path / f"{action}.json").as_uri(),
    )  # fmt: skip


def test_open_backend_picks_the_pointer_for_a_batch_model(user_value_home):
    _home, resources = user_value_home
    backend = open_backend(
        resources, load_model("user_value"), [], SmokeTest([], []), log=lambda _: None, guard=lambda: None
    )
    assert isinstance(backend, BatchRollout) and backend.key == "user_id" and backend.model == "user_value"


def test_the_production_path_moves_alias_and_pointer_together_and_rolls_both_back(user_value_home, tmp_path):
    _home, resources = user_value_home
    store, artifacts = resources.batch_store, resources.store
    for version in (1, 2):
        publish(store, artifacts, "user_value", version)
    path = ProductionPath(model=load_model("user_value"), resources=resources, log=lambda _: None)

    first = path.change(a_change(tmp_path, "deploy", 1, None))
    assert first.success and first.alias_moved
    assert (resources.registry.alias("user_value"), store.pointer("user_value").version) == (1, 1)

    second = path.change(a_change(tmp_path, "deploy", 2, 1))
    assert second.success and "batch pointer" in second.message
    assert (resources.registry.alias("user_value"), store.pointer("user_value").version) == (2, 2)
    assert answered_versions(store, "user_value") == ({2}, list(scores_of(2).values()))
    written = json.loads((tmp_path / "deploy.json").read_text())
    assert written["success"] and [e["event"] for e in written["events"]] == ["switched", "checked"]

    back = path.change(a_change(tmp_path, "rollback", 1, 2))
    assert back.success and back.message.startswith("rolled back user_value: production v2 -> v1")
    assert (resources.registry.alias("user_value"), store.pointer("user_value").version) == (1, 1)
    assert answered_versions(store, "user_value") == ({1}, list(scores_of(1).values()))


def test_a_failed_batch_through_the_production_path_moves_neither(user_value_home, tmp_path):
    from keiko.rollout.production import ProductionChangeFailed

    _home, resources = user_value_home
    store, artifacts = resources.batch_store, resources.store
    publish(store, artifacts, "user_value", 1)
    publish(store, artifacts, "user_value", 2, seal=False)
    path = ProductionPath(model=load_model("user_value"), resources=resources, log=lambda _: None)
    path.change(a_change(tmp_path, "deploy", 1, None))
    with pytest.raises(ProductionChangeFailed, match=r"production stays v1: .*v2 has no sealed batch"):
        path.change(a_change(tmp_path, "deploy", 2, 1))
    assert (resources.registry.alias("user_value"), store.pointer("user_value").version) == (1, 1)


def test_a_rollback_to_a_batch_whose_keys_expired_is_refused_saying_so(store, artifacts, model):
    """The previous batch's manifest outlives its keys: switching back to it would serve only fallbacks."""
    publish(store, artifacts, model, 1)
    publish(store, artifacts, model, 2)
    store.switch(model, 1, expected=None)
    store.switch(model, 2, expected=1)
    store.delete(model, 1)  # as its TTL would: keys gone
    manifest = BatchManifest(
        model, 1, KEYS, 0.05, time.time(), time.time() + HOUR, f"{artifacts.root_uri}/{model}/v1/batch.parquet"
    )
    store.seal(manifest)  # the manifest alone, as after the keys' TTL ended
    rollout = BatchRollout(model=model, key=KEY, store=store, artifacts=artifacts, log=lambda _m: None)
    with pytest.raises(
        RolloutFailed, match=r"16 of 16 of its keys are not in the store \(missing; .*rerun the batch_score"
    ) as failed:
        rollout.run(1, 2)
    assert failed.value.rolled_back and answered_versions(store, model)[0] == {2}
