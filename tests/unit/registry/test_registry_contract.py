"""The registry contract (keiko.registry.Registry), checked on every backend.

SQL runs on SQLite in tmp_path; DynamoDB on the session's moto server, one fresh table per test. The
races start their threads on a barrier, each with its own registry instance (as separate processes
would), connected beforehand so that only the writes race, and switch threads often while they run.

moto's server does not isolate concurrent DynamoDB requests (see `moto_endpoint` in conftest): its
backend runs behind a lock there, which is the guarantee real DynamoDB gives.
"""

from __future__ import annotations

import datetime as dt
import re
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

import pytest

from keiko.errors import LeaseHeld, LeaseLost, RegistryError
from keiko.registry import Registration, Registry, open_registry

T = TypeVar("T")
WINDOW = ("2026-11-15", "2026-11-21")
RACERS = 10


@pytest.fixture(params=["sql", pytest.param("dynamodb", marks=pytest.mark.aws)])
def registry_url(request: pytest.FixtureRequest, tmp_path) -> str:
    if request.param == "sql":
        return f"sqlite:///{tmp_path / 'registry.db'}"
    request.getfixturevalue("aws")  # keiko talks to the moto server
    return f"dynamodb://keiko-registry-{uuid.uuid4().hex}"  # the server is shared by the session


@pytest.fixture
def registry(registry_url: str) -> Registry:
    return open_registry(registry_url)


def register(
    registry: Registry,
    sha: str,
    *,
    window: tuple[str, str] = WINDOW,
    status: str = "registered",
    model: str = "ctr",
    metrics: dict[str, Any] | None = None,
) -> Registration:
    return registry.register(
        model=model,
        ds=window[1],
        window_start=window[0],
        window_end=window[1],
        artifact_uri=f"file:///a/{sha}.npz",
        artifact_sha256=sha,
        code_version="0.1.0+abc",
        config_sha256="c" * 64,
        features_sha256="f" * 64,
        algorithm="hashed_logistic_regression",
        metrics={"test": {"logloss": 0.12}} if metrics is None else metrics,
        status=status,
    )


def race(url: str, action: Callable[[Registry, int], T], racers: int = RACERS) -> list[T | RegistryError]:
    """`action(registry, i)` for i in range(racers), in threads released together; results in order of i."""
    registries = [open_registry(url) for _ in range(racers)]
    for each in registries:
        each.list("warm-up")  # engine, client, table: set up before the start
    start = threading.Barrier(racers)

    def run(i: int) -> T | RegistryError:
        start.wait(timeout=60)
        try:
            return action(registries[i], i)
        except RegistryError as error:
            return error

    # The GIL hands over every 5 ms by default, longer than most of a request: switch far more often
    # so that the racers' reads and writes interleave (the moto server's threads are in this process).
    switch_interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-5)
    try:
        with ThreadPoolExecutor(max_workers=racers) as pool:
            return list(pool.map(run, range(racers)))
    finally:
        sys.setswitchinterval(switch_interval)


# --- versions ---


def test_versions_are_monotonic_per_model(registry):
    assert [register(registry, s).version.version for s in ("a", "b", "c")] == [1, 2, 3]
    assert register(registry, "a", model="cvr").version.version == 1
    assert [v.version for v in registry.list("ctr")] == [1, 2, 3]
    assert registry.list("nothing") == []


def test_a_retry_returns_the_existing_version(registry):
    first = register(registry, "a")
    again = register(registry, "a", metrics={"test": {"logloss": 0.5}})
    assert first.created and not again.created
    assert again.version == first.version  # the retry's other fields are ignored
    assert len(registry.list("ctr")) == 1
    # Same artifact over another window is another version.
    assert register(registry, "a", window=("2026-11-16", "2026-11-22")).version.version == 2


def test_lineage_is_stored(registry):
    registered = register(registry, "a").version
    entry = registry.get("ctr", 1)
    assert entry == registered
    assert (entry.window_start, entry.window_end) == WINDOW
    assert entry.artifact_sha256 == "a" and entry.code_version == "0.1.0+abc"
    assert (entry.status, entry.reason, entry.run_id) == ("registered", "", "")
    assert entry.metrics == {"test": {"logloss": 0.12}}
    assert dt.datetime.fromisoformat(entry.created_at)
    with pytest.raises(RegistryError, match="no version 9"):
        registry.get("ctr", 9)


def test_metrics_round_trip_exactly(registry):
    metrics = {
        "test": {"logloss": 0.1 + 0.2, "auc": 0.7512345678901234, "tiny": 5e-324, "rows": 123_456},
        "profile_uri": "s3://bucket/keiko/profile.json",
        "per_day": [{"day": "2026-11-21", "logloss": 1 / 3}],
        "empty": {},
    }
    register(registry, "a", metrics=metrics)
    assert registry.get("ctr", 1).metrics == metrics
    assert registry.list("ctr")[0].metrics == metrics


def test_an_unknown_status_is_refused(registry):
    with pytest.raises(RegistryError, match="unknown status 'blessed'"):
        register(registry, "a", status="blessed")
    assert registry.list("ctr") == []


def test_concurrent_registrations_get_distinct_versions(registry_url):
    results = race(registry_url, lambda registry, i: register(registry, f"sha{i}"))
    assert all(isinstance(r, Registration) and r.created for r in results), results
    versions = [r.version.version for r in results]
    assert sorted(versions) == list(range(1, RACERS + 1))  # no number shared, none skipped
    # None lost: every registration is stored under the number it was given.
    stored = open_registry(registry_url).list("ctr")
    assert {v.artifact_sha256: v.version for v in stored} == {f"sha{i}": versions[i] for i in range(RACERS)}


def test_concurrent_registrations_of_one_identity_make_one_version(registry_url):
    results = race(registry_url, lambda registry, _i: register(registry, "same"))
    assert all(isinstance(r, Registration) for r in results), results
    assert sorted(r.created for r in results) == [False] * (RACERS - 1) + [True]
    assert {r.version.version for r in results} == {1}
    assert [v.version for v in open_registry(registry_url).list("ctr")] == [1]


# --- aliases ---


def test_production_alias_moves_and_remembers_the_previous(registry):
    for sha in ("a", "b"):
        register(registry, sha)
    assert registry.alias("ctr") is None and registry.previous("ctr") is None
    assert registry.move_alias("ctr", 1) is None
    assert registry.previous("ctr") is None
    assert registry.move_alias("ctr", 2, expected=1) == 1
    assert registry.alias("ctr") == 2 and registry.previous("ctr") == 1
    assert [(h["from_version"], h["to_version"]) for h in registry.history("ctr")] == [(None, 1), (1, 2)]


def test_conditional_alias_move_refuses_a_stale_view(registry):
    for sha in ("a", "b", "c"):
        register(registry, sha)
    registry.move_alias("ctr", 1)
    registry.move_alias("ctr", 2, expected=1)
    with pytest.raises(RegistryError, match="moved concurrently"):
        registry.move_alias("ctr", 3, expected=1)
    assert registry.alias("ctr") == 2
    assert len(registry.history("ctr")) == 2


def test_moving_to_the_current_version_changes_nothing(registry):
    register(registry, "a")
    registry.move_alias("ctr", 1)
    assert registry.move_alias("ctr", 1, expected=1) == 1
    assert registry.move_alias("ctr", 1) == 1
    assert len(registry.history("ctr")) == 1 and registry.previous("ctr") is None


@pytest.mark.parametrize("status", ["rejected", "historical"])
def test_rejected_versions_never_become_production(registry, status):
    register(registry, "a", status=status)
    with pytest.raises(RegistryError, match=f"ctr v1 is {status}, it cannot become production"):
        registry.move_alias("ctr", 1)
    assert registry.alias("ctr") is None
    assert registry.history("ctr") == []


def test_a_missing_version_cannot_become_production(registry):
    register(registry, "a")
    with pytest.raises(RegistryError, match="ctr has no version 2"):
        registry.move_alias("ctr", 2)
    assert registry.alias("ctr") is None


def test_history_is_in_order_and_per_alias(registry):
    for sha in ("a", "b", "c"):
        register(registry, sha)
    # Away and back (1 -> 2 -> 1) included: the history must not confuse the two v1 periods.
    for version in (1, 2, 1, 3, 2):
        registry.move_alias("ctr", version, note=f"to v{version}")
    registry.move_alias("ctr", 3, alias="canary")
    history = registry.history("ctr")
    assert [(h["from_version"], h["to_version"]) for h in history] == [(None, 1), (1, 2), (2, 1), (1, 3), (3, 2)]
    assert [h["note"] for h in history] == ["to v1", "to v2", "to v1", "to v3", "to v2"]
    assert {(h["model"], h["alias"]) for h in history} == {("ctr", "production")}
    ids = [h["id"] for h in history]
    assert ids == sorted(ids) and len(set(ids)) == len(ids)
    times = [dt.datetime.fromisoformat(h["at"]) for h in history]
    assert times == sorted(times)
    assert [(h["from_version"], h["to_version"]) for h in registry.history("ctr", "canary")] == [(None, 3)]
    assert registry.aliases_of("ctr") == {"production": 2, "canary": 3}
    assert registry.previous("ctr") == 3 and registry.aliases_of("cvr") == {}


def test_concurrent_conditional_moves_have_one_winner(registry_url):
    registry = open_registry(registry_url)
    for sha in ("a", "b", "c"):
        register(registry, sha)
    registry.move_alias("ctr", 1)

    # Racer 0 deploys v2, racer 1 deploys v3; both saw v1 in production.
    results = race(registry_url, lambda racer, i: racer.move_alias("ctr", 2 + i, expected=1), racers=2)
    winners = [i for i, result in enumerate(results) if result == 1]
    losers = [result for result in results if isinstance(result, RegistryError)]
    assert len(winners) == 1 and len(losers) == 1, results
    assert "moved concurrently" in str(losers[0])
    winner = 2 + winners[0]
    assert registry.alias("ctr") == winner and registry.previous("ctr") == 1
    assert [(h["from_version"], h["to_version"]) for h in registry.history("ctr")] == [(None, 1), (1, winner)]


def test_expecting_no_alias_is_a_compare_and_set_too(registry):
    for sha in ("a", "b"):
        register(registry, sha)
    assert registry.move_alias("ctr", 1, expected=None) is None  # nothing yet: as expected
    with pytest.raises(RegistryError, match="moved concurrently"):
        registry.move_alias("ctr", 2, expected=None)  # what a deploy that saw "no production yet" would do
    assert registry.alias("ctr") == 1 and len(registry.history("ctr")) == 1


def test_concurrent_first_moves_have_one_winner(registry_url):
    registry = open_registry(registry_url)
    for sha in ("a", "b"):
        register(registry, sha)
    # Two deploys that both saw no production version yet.
    results = race(registry_url, lambda racer, i: racer.move_alias("ctr", 1 + i, expected=None), racers=2)
    losers = [result for result in results if isinstance(result, RegistryError)]
    assert results.count(None) == 1 and len(losers) == 1, results
    assert "moved concurrently" in str(losers[0])
    winner = 1 + results.index(None)
    assert registry.alias("ctr") == winner
    assert [(h["from_version"], h["to_version"]) for h in registry.history("ctr")] == [(None, winner)]


# --- leases ---


def test_one_lease_per_model_names_its_holder(registry):
    lease = registry.acquire_lease("ctr", "deploy of ctr v2 for run manual__1", seconds=30)
    assert registry.current_lease("ctr") == lease
    with pytest.raises(LeaseHeld) as held:
        registry.acquire_lease("ctr", "keiko rollback ctr by oncall", seconds=30)
    assert held.value.lease == lease
    assert str(held.value).startswith("ctr's production is being changed by deploy of ctr v2 for run manual__1, since ")
    other = registry.acquire_lease("cvr", "deploy of cvr v1", seconds=30)  # per model
    registry.release_lease(lease)
    assert registry.current_lease("ctr") is None and registry.current_lease("cvr") == other
    assert registry.acquire_lease("ctr", "keiko rollback ctr by oncall", seconds=30).holder.startswith("keiko rollback")


def test_an_expired_lease_is_taken_over_and_its_old_holder_cannot_use_it(registry):
    crashed = registry.acquire_lease("ctr", "a deploy that crashed", seconds=0.2)
    time.sleep(0.3)
    assert registry.current_lease("ctr") is None
    taken = registry.acquire_lease("ctr", "the next deploy", seconds=30)
    with pytest.raises(LeaseLost, match="now held by the next deploy"):
        registry.renew_lease(crashed, seconds=30)
    registry.release_lease(crashed)  # not its lease any more: nothing happens
    assert registry.current_lease("ctr") == taken


def test_renewing_keeps_the_lease(registry, registry_clock):
    lease = registry.acquire_lease("ctr", "a long rollout", seconds=2)
    for _ in range(3):
        registry_clock.advance(0.8)
        lease = registry.renew_lease(lease, seconds=2)
    assert registry.current_lease("ctr") == lease  # held for 2.4 s on a 2 s lease
    with pytest.raises(LeaseHeld):
        registry.acquire_lease("ctr", "another", seconds=30)


def test_a_fenced_move_needs_the_lease_still_held(registry):
    for sha in ("a", "b"):
        register(registry, sha)
    registry.move_alias("ctr", 1)
    lease = registry.acquire_lease("ctr", "deploy of v2", seconds=0.2)
    time.sleep(0.3)  # the holder was paused past its lease ...
    registry.acquire_lease("ctr", "keiko rollback ctr by oncall", seconds=30)  # ... and someone else took it
    with pytest.raises(LeaseLost):
        registry.move_alias("ctr", 2, expected=1, lease=lease)
    assert registry.alias("ctr") == 1 and len(registry.history("ctr")) == 1
    ours = registry.acquire_lease("cvr", "deploy of cvr", seconds=30)
    register(registry, "c", model="cvr")
    assert registry.move_alias("cvr", 1, expected=None, lease=ours) is None


def test_concurrent_acquisitions_have_one_winner(registry_url):
    results = race(registry_url, lambda racer, i: racer.acquire_lease("ctr", f"racer {i}", seconds=30))
    winners = [r for r in results if not isinstance(r, RegistryError)]
    assert len(winners) == 1 and all(isinstance(r, LeaseHeld) for r in results if r not in winners), results
    assert open_registry(registry_url).current_lease("ctr") == winners[0]


# --- opening ---


@pytest.mark.parametrize(
    ("url", "says"),
    [
        ("", "is not a URL"),
        ("registry.db", "is not a URL"),
        ("nosuchdialect://host/db", "nor a usable SQLAlchemy URL"),
        ("dynamodb://", "is not a DynamoDB table name"),
        ("dynamodb://ab", "is not a DynamoDB table name"),
        ("dynamodb://bad!name", "is not a DynamoDB table name"),
        ("dynamodb://keiko-registry/extra", "expected dynamodb://<table>"),
        ("dynamodb://keiko-registry?bogus=1", "unknown parameter bogus"),
        ("dynamodb://keiko-registry?region=", "region must be given once"),
    ],
)
def test_open_registry_names_a_bad_url(url, says):
    with pytest.raises(RegistryError, match=re.escape(repr(url)) + ".*" + re.escape(says)):
        open_registry(url)


def test_open_registry_hides_a_password():
    with pytest.raises(RegistryError) as error:
        open_registry("nosuchdialect://keiko:hunter2@db.internal/registry")
    assert "hunter2" not in str(error.value) and "keiko:***@db.internal" in str(error.value)


def test_open_registry_picks_the_backend_without_connecting(tmp_path):
    from keiko.registry.dynamodb import DynamoDBRegistry
    from keiko.registry.sql import SqlRegistry

    dynamo = open_registry("dynamodb://keiko-registry?region=eu-west-1")
    assert isinstance(dynamo, DynamoDBRegistry) and isinstance(dynamo, Registry)
    assert (dynamo.table, dynamo.region) == ("keiko-registry", "eu-west-1")
    assert "client" not in vars(dynamo)  # no client made, nothing read
    sql = open_registry(f"sqlite:///{tmp_path / 'registry.db'}")
    assert isinstance(sql, SqlRegistry) and isinstance(sql, Registry)
    assert not (tmp_path / "registry.db").exists()


def test_importing_the_registry_loads_no_backend_driver():
    code = (
        "import sys, keiko.registry; "
        "print(sorted({m.split('.')[0] for m in sys.modules} & {'boto3', 'botocore', 'sqlalchemy', 'airflow'}))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"
