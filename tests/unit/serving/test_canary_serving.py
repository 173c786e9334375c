"""A canary served by every replica beside the stable version: who gets which, what /metrics and the prediction log
say of it, and how /admin/split starts, moves, refuses and ends it."""

from __future__ import annotations

import contextlib
import hashlib
from collections import Counter

import httpx
import pytest

from conftest import register_variant, serve_in_thread, v1_bytes
from keiko.config import settings
from keiko.errors import KeikoError
from keiko.registry import open_registry
from keiko.serving.app import create_app
from keiko.serving.client import ModelServerClient
from keiko.serving.monitoring import summed, variant_counts
from keiko.serving.split import TrafficSplit
from keiko.warehouse import DuckDBWarehouse

pytestmark = pytest.mark.server

SALT = "s"
USERS = range(1_000_001, 1_002_001)  # 2,000 distinct users


@pytest.fixture
def v2(run_home, monkeypatch) -> int:
    """Another registered version of ctr (v1's artifact: it scores alike, its answers name it)."""
    monkeypatch.delenv("KEIKO_ADMIN_TOKEN", raising=False)
    return register_variant(v1_bytes(), window_start="2026-11-09")


@contextlib.contextmanager
def replicas(count: int = 2, admin_token: str | None = None):
    """`count` replicas serving v1 (none loads production at start); yields (apps, a client of each)."""
    apps = [create_app("ctr", load_production=False, admin_token=admin_token) for _ in range(count)]
    for app in apps:
        app.state.server.load(1)
    with contextlib.ExitStack() as stack:
        urls = [stack.enter_context(serve_in_thread(app)) for app in apps]
        yield apps, [stack.enter_context(ModelServerClient(url)) for url in urls]


@pytest.fixture
def canary(v2):
    """Two replicas serving v1, with v2 as a canary at 30% on both; yields (apps, clients)."""
    with replicas() as (apps, clients):
        for client in clients:
            assert client.set_split(v2, 0.3, SALT)["canary"]["version"] == v2
        yield apps, clients


def row_of(one_row: list[dict], user_id: int | None) -> list[dict]:
    return [{**one_row[0], "user_id": user_id, "impression_id": user_id}] if user_id else [dict(one_row[0])]


def on_canary_at(weight: float, users=USERS, salt: str = SALT) -> set[int]:
    split = TrafficSplit(version=2, weight=weight, salt=salt)
    return {user for user in users if split.on_canary(user)}


def answers_by_user(clients, one_row, users=USERS) -> dict[int, dict]:
    """Each user's answer, the users spread over the replicas in turn."""
    return {user: clients[i % len(clients)].predict(row_of(one_row, user)) for i, user in enumerate(users)}


def canary_users(answers: dict[int, dict]) -> set[int]:
    return {user for user, answer in answers.items() if answer["variant"] == "canary"}


def test_a_user_keeps_one_variant_and_version_across_requests_and_replicas(canary, one_row, v2):
    _apps, clients = canary
    (on_canary, *_), (on_stable, *_) = sorted(on_canary_at(0.3)), sorted(set(USERS) - on_canary_at(0.3))
    for user, expected in ((on_canary, ("canary", v2)), (on_stable, ("stable", 1))):
        answers = [clients[i % 2].predict(row_of(one_row, user)) for i in range(50)]
        assert {(a["variant"], a["model_version"]) for a in answers} == {expected}, user
        assert all(len(a["predictions"]) == 1 for a in answers)


def test_a_request_without_a_user_id_is_answered_by_stable(canary, one_row):
    _apps, clients = canary
    for client in clients:
        answer = client.predict(row_of(one_row, None))
        assert (answer["variant"], answer["model_version"]) == ("stable", 1)


def test_the_canary_answers_its_share_of_the_users_with_its_version(canary, one_row, v2):
    _apps, clients = canary
    answers = answers_by_user(clients, one_row)
    assert all({"variant", "model_version", "predictions"} <= answer.keys() for answer in answers.values())
    on_canary = canary_users(answers)
    assert abs(len(on_canary) / len(USERS) - 0.3) < 0.03
    assert on_canary == on_canary_at(0.3)  # every replica places users as keiko.serving.split does
    assert {a["model_version"] for u, a in answers.items() if u in on_canary} == {v2}
    assert {a["model_version"] for u, a in answers.items() if u not in on_canary} == {1}
    # v2 is v1's artifact: the same row gets the same score from either
    assert len({a["predictions"][0] for a in answers.values()}) == 1


def test_metrics_count_each_variants_requests_on_each_replica(canary, one_row):
    _apps, clients = canary
    answers = answers_by_user(clients, one_row)
    sent = [Counter(answers[user]["variant"] for user in list(USERS)[i::2]) for i in range(2)]  # per replica
    texts = [client.metrics() for client in clients]
    for text, expected in zip(texts, sent, strict=True):
        for variant in ("canary", "stable"):
            labels = f'model="ctr",protocol="predict",status="200",variant="{variant}"'
            line = f"keiko_serving_requests_total{{{labels}}} {expected[variant]}.0"
            assert line in text, line
        counted = variant_counts(text)
        assert {v: counted[v].requests for v in ("canary", "stable")} == dict(expected)
        assert counted["canary"].errors == counted["stable"].errors == 0
        assert counted["canary"].latency_buckets["+Inf"] == expected["canary"]
    total = summed([variant_counts(text) for text in texts])
    assert total["canary"].requests == len(canary_users(answers))
    assert total["canary"].requests + total["stable"].requests == len(USERS)
    assert total["stable"].latency_buckets["+Inf"] == total["stable"].requests


def test_the_prediction_log_records_each_answers_variant_and_version(run_home, v2, one_row):
    users = USERS[:400]
    with replicas() as (_apps, clients):
        for client in clients:
            client.set_split(v2, 0.3, SALT)
        answers = answers_by_user(clients, one_row, users)
    # The replicas have stopped (uvicorn's shutdown): what their logs held is written.
    logged = DuckDBWarehouse(run_home / "served").query("SELECT user_id, variant, version FROM predictions")
    rows = {(r["user_id"], r["variant"], r["version"]) for r in logged.to_pylist()}
    assert len(logged) == len(users)
    assert rows == {(user, a["variant"], a["model_version"]) for user, a in answers.items()}
    assert Counter(variant for _, variant, _ in rows) == Counter(a["variant"] for a in answers.values())
    assert {(variant, version) for _, variant, version in rows} == {("canary", v2), ("stable", 1)}


def test_a_request_of_many_rows_is_routed_by_its_first_rows_user(canary, one_row, v2):
    """An auction of more rows than the row scorer takes (scored in a micro-batch): one user's, one variant."""
    _apps, clients = canary
    canary_user, stable_user = min(on_canary_at(0.3)), min(set(USERS) - on_canary_at(0.3))
    for first, expected in ((canary_user, ("canary", v2)), (stable_user, ("stable", 1))):
        rows = [{**one_row[0], "user_id": user} for user in (first, *USERS[:99])]
        answer = clients[0].predict(rows)
        assert (answer["variant"], answer["model_version"]) == expected
        assert len(answer["predictions"]) == 100


def test_raising_the_weight_keeps_every_canary_user_on_the_canary(canary, one_row, v2):
    _apps, clients = canary
    users = USERS[:1000]
    at_30 = canary_users(answers_by_user(clients, one_row, users))
    for client in clients:
        assert client.set_split(v2, 0.6, SALT)["canary"]["weight"] == 0.6
    at_60 = canary_users(answers_by_user(clients, one_row, users))
    assert at_30 < at_60
    assert abs(len(at_60) / len(users) - 0.6) < 0.05


def test_the_variant_header_forces_a_variant(canary, one_row, v2):
    _apps, clients = canary
    stable_user = min(set(USERS) - on_canary_at(0.3))
    canary_user = min(on_canary_at(0.3))
    for client in clients:
        forced = client.predict(row_of(one_row, stable_user), variant="canary")
        assert (forced["variant"], forced["model_version"]) == ("canary", v2)
        forced = client.predict(row_of(one_row, canary_user), variant="stable")
        assert (forced["variant"], forced["model_version"]) == ("stable", 1)
        no_user = client.predict(row_of(one_row, None), variant="canary")  # a known-answer check
        assert (no_user["variant"], no_user["model_version"]) == ("canary", v2)
        unknown = client.predict(row_of(one_row, stable_user), variant="blue")  # not a variant: ignored
        assert unknown["variant"] == "stable"
    for client in clients:
        client.set_split(None)
    assert clients[0].predict(row_of(one_row, stable_user), variant="canary")["variant"] == "stable"  # no canary


def test_with_an_admin_token_the_variant_header_needs_it(v2, one_row):
    stable_user = min(set(USERS) - on_canary_at(0.3))
    row = {"rows": row_of(one_row, stable_user)}
    with replicas(1, admin_token="t") as (_apps, (client,)):
        assert client.http.post("/admin/split", json={"version": v2, "weight": 0.3, "salt": SALT}).status_code == 401
        bearer = {"authorization": "Bearer t"}
        split = client.http.post("/admin/split", json={"version": v2, "weight": 0.3, "salt": SALT}, headers=bearer)
        assert split.status_code == 200, split.text
        for headers in ({"x-keiko-variant": "canary"}, {"x-keiko-variant": "canary", "authorization": "Bearer x"}):
            answer = httpx.post(f"{client.base_url}/predict", json=row, headers=headers).json()
            assert (answer["variant"], answer["model_version"]) == ("stable", 1), headers
        honored = httpx.post(f"{client.base_url}/predict", json=row, headers={"x-keiko-variant": "canary", **bearer})
        assert (honored.json()["variant"], honored.json()["model_version"]) == ("canary", v2)


def test_a_variant_header_that_is_not_utf8_is_ignored(v2, one_row):
    row = {"rows": row_of(one_row, min(set(USERS) - on_canary_at(0.3)))}
    with replicas(1, admin_token="t") as (_apps, (client,)):
        split = {"version": v2, "weight": 0.3, "salt": SALT}
        assert client.http.post("/admin/split", json=split, headers={"authorization": "Bearer t"}).status_code == 200
        for headers in ({"x-keiko-variant": b"\xff"}, {"x-keiko-variant": "canary", "authorization": b"Bearer \xe9"}):
            answer = httpx.post(f"{client.base_url}/predict", json=row, headers=headers)
            assert answer.status_code == 200, headers
            assert answer.json()["variant"] == "stable"
        assert variant_counts(client.metrics())["stable"].requests == 2


def test_a_split_with_no_version_ends_the_canary(canary, one_row):
    _apps, clients = canary
    for client in clients:
        answer = client.set_split(None)
        assert answer == {"version": 1, "canary": None}
        assert client.version()["canary"] is None
    answers = answers_by_user(clients, one_row, USERS[:300])
    assert {(a["variant"], a["model_version"]) for a in answers.values()} == {("stable", 1)}


def register_rejected() -> int:
    """A version the registry holds as rejected (a gate failed it): not servable."""
    registry = open_registry(settings().registry_url)
    v1 = registry.get("ctr", 1)
    fields = ("ds", "window_end", "artifact_uri", "code_version", "config_sha256", "features_sha256", "algorithm")
    artifact = v1_bytes() + b"rejected"
    registration = registry.register(
        model="ctr",
        window_start="2026-11-08",
        artifact_sha256=hashlib.sha256(artifact).hexdigest(),
        metrics=v1.metrics,
        status="rejected",
        **{name: getattr(v1, name) for name in fields},
    )
    return registration.version.version


def test_admin_split_refuses_what_it_cannot_serve_and_keeps_the_canary(canary, one_row, v2):
    _apps, clients = canary
    client = clients[0]
    before = client.version()["canary"]
    assert (before["version"], before["weight"], before["salt"]) == (v2, 0.3, SALT)

    refused = client.http.post("/admin/split", json={"version": v2, "weight": 1.5, "salt": SALT})
    assert refused.status_code == 422
    assert [d["field"] for d in refused.json()["detail"]] == ["weight"]
    refused = client.http.post("/admin/split", json={"version": v2, "weight": 0.3, "salt": ""})
    assert refused.status_code == 422 and "salt" in refused.json()["error"]

    refused = client.http.post("/admin/split", json={"version": 1, "weight": 0.3, "salt": SALT})
    assert refused.status_code == 409
    assert "v1 serves already" in refused.json()["error"]
    assert refused.json()["canary"] == before

    tampered = register_variant(v1_bytes(), sha256="0" * 64, window_start="2026-11-10")
    for version, reason in ((999, "no version 999"), (register_rejected(), "rejected"), (tampered, "sha256")):
        refused = client.http.post("/admin/split", json={"version": version, "weight": 0.3, "salt": SALT})
        assert refused.status_code == 409, version
        assert reason in refused.json()["error"]
        assert refused.json()["canary"] == before
    with pytest.raises(KeikoError, match="refused to serve v999 as a canary at 50%"):
        client.set_split(999, 0.5, SALT)

    assert client.version()["canary"] == before
    assert canary_users(answers_by_user([client], one_row, USERS[:500])) == on_canary_at(0.3, USERS[:500])


def test_loading_the_canary_version_promotes_it(canary, one_row, v2):
    _apps, clients = canary
    for client in clients:
        assert client.load(v2)["version"] == v2
        status = client.version()
        assert (status["version"], status["canary"]) == (v2, None)
    answers = answers_by_user(clients, one_row, USERS[:500])
    assert {(a["variant"], a["model_version"]) for a in answers.values()} == {("stable", v2)}
