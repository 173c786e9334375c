"""A batch model's server (keiko.serving.batch_server.BatchModelServer, what create_app makes of user_value): each
/predict row's user_id looked up in the batch store through the pointer, answered with its batch score, or with
the batch's prior when the key is missing or the batch expired; counted in /metrics and the prediction log.

On the session's redis-server; the store is seeded directly (write, seal, switch), as batch_score and deploy
would leave it."""

from __future__ import annotations

import datetime as dt
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
import redis
from starlette.testclient import TestClient

from conftest import serve_in_thread
from keiko.batch_store import BatchManifest
from keiko.batch_store.redis_store import RedisBatchStore
from keiko.serving.app import create_app
from keiko.serving.batch_server import POINTER_READ_SECONDS, BatchModelServer
from keiko.warehouse import DuckDBWarehouse

pytestmark = pytest.mark.server

MODEL = "user_value"
HOUR = 3600.0
PRIOR = {1: 0.0625, 2: 0.125}  # each version's fallback (training's label rate)
USERS = range(1, 51)


def score(version: int, user: int) -> float:
    """`user`'s score in `version`'s batch: distinct per version, so a score tells its version."""
    return 0.2 * version + user / 1000


@pytest.fixture
def home(tmp_path, monkeypatch, redis_server):
    """An empty KEIKO_HOME; the batch store the session's redis-server, with no batch of user_value in it."""
    home = tmp_path / "home"
    monkeypatch.setenv("KEIKO_HOME", str(home))
    monkeypatch.setenv("KEIKO_WAREHOUSE_DIR", str(home / "warehouse"))
    monkeypatch.setenv("KEIKO_PREDICTION_LOG_URL", (home / "served" / "predictions").as_uri())
    monkeypatch.setenv("KEIKO_BATCH_STORE_URL", redis_server)
    client = redis.Redis.from_url(redis_server)
    for name in client.scan_iter(match=f"keiko:batch:{{{MODEL}}}:*"):
        client.delete(name)
    client.close()
    return home


@pytest.fixture
def store(home, redis_server):
    with RedisBatchStore(redis_server) as opened:
        yield opened


def publish(
    store: RedisBatchStore,
    version: int,
    *,
    ttl: float = HOUR,
    scored_at: float | None = None,
    expires_at: float | None = None,
    switch_from: int | bool | None = False,
) -> BatchManifest:
    """`version`'s batch of USERS written and sealed; switched to from `switch_from` (False: not switched)."""
    users = [str(user) for user in USERS]
    store.write(MODEL, version, users, [score(version, user) for user in USERS], ttl_seconds=ttl)
    scored_at = time.time() if scored_at is None else scored_at
    manifest = BatchManifest(
        MODEL, version, len(users), PRIOR[version], scored_at, scored_at + ttl if expires_at is None else expires_at,
        f"file:///unused/v{version}.parquet",
    )  # fmt: skip
    store.seal(manifest)
    if switch_from is not False:
        store.switch(MODEL, version, expected=switch_from)
    return manifest


def rows(*users: int) -> dict:
    return {"rows": [{"user_id": user} for user in users]}


def iso(epoch: float) -> str:
    return dt.datetime.fromtimestamp(epoch, dt.UTC).isoformat(timespec="seconds")


def wait_ready(client: TestClient) -> httpx.Response:
    for _ in range(100):
        response = client.get("/readyz")
        if response.status_code == 200:
            return response
        time.sleep(0.02)
    return response


def test_create_app_makes_a_batch_server_for_a_batch_model(home):
    app = create_app(MODEL, load_production=False)
    assert isinstance(app.state.server, BatchModelServer)
    assert app.state.server.key == "user_id"


def test_a_known_key_answers_its_batch_score_and_version(store):
    manifest = publish(store, 1, switch_from=None)
    with TestClient(create_app(MODEL)) as client:
        response = client.post("/predict", json=rows(7))
    assert response.status_code == 200
    assert response.json() == {
        "model_version": 1,
        "variant": "batch",
        "predictions": [score(1, 7)],
        "scored_at": iso(manifest.scored_at),
        "fallback": [None],
    }
    dt.datetime.fromisoformat(response.json()["scored_at"])  # ISO text


def test_an_unknown_key_answers_the_batchs_prior(store):
    publish(store, 1, switch_from=None)
    with TestClient(create_app(MODEL)) as client:
        answer = client.post("/predict", json=rows(999_999)).json()
    assert (answer["model_version"], answer["variant"]) == (1, "fallback")
    assert answer["predictions"] == [PRIOR[1]] and answer["fallback"] == ["missing"]


def test_a_request_mixing_known_and_unknown_keys_answers_each(store):
    publish(store, 1, switch_from=None)
    with TestClient(create_app(MODEL)) as client:
        answer = client.post("/predict", json=rows(3, 999_999, 50)).json()
    assert answer["model_version"] == 1 and answer["variant"] == "fallback"
    assert answer["predictions"] == [score(1, 3), PRIOR[1], score(1, 50)]
    assert answer["fallback"] == [None, "missing", None]


def test_an_expired_batch_answers_the_prior_with_fallback_expired(store):
    now = time.time()
    publish(store, 1, scored_at=now - 4 * HOUR, expires_at=now - HOUR, switch_from=None)
    with TestClient(create_app(MODEL)) as client:
        answer = client.post("/predict", json=rows(7, 999_999)).json()
    assert answer["model_version"] == 1 and answer["variant"] == "fallback"
    assert answer["predictions"] == [PRIOR[1], PRIOR[1]]
    assert answer["fallback"] == ["expired", "expired"]


def test_a_batch_past_its_redis_ttl_answers_the_prior(store):
    publish(store, 1, ttl=1.0, switch_from=None)
    with TestClient(create_app(MODEL)) as client:
        assert client.post("/predict", json=rows(7)).json()["fallback"] == [None]
        time.sleep(1.5)  # Redis expires the batch's hash; its manifest says it expired
        answer = client.post("/predict", json=rows(7)).json()
    assert (answer["predictions"], answer["fallback"], answer["variant"]) == ([PRIOR[1]], ["expired"], "fallback")


def test_no_batch_at_all_is_503_and_not_ready(store):
    with TestClient(create_app(MODEL)) as client:
        response = client.post("/predict", json=rows(7))
        assert response.status_code == 503
        assert "no batch in the store yet" in response.json()["error"]
        ready = client.get("/readyz")
        assert ready.status_code == 503 and ready.json()["ready"] is False
        assert "no batch" in ready.json()["reason"]
        assert client.get("/version").json()["version"] is None


def test_after_a_switch_the_server_answers_and_version_names_the_batch(store):
    with TestClient(create_app(MODEL)) as client:
        assert client.post("/predict", json=rows(7)).status_code == 503
        manifest = publish(store, 1, switch_from=None)
        version = client.get("/version").json()
        assert version["version"] == 1 and version["mode"] == "batch"
        assert version["batch"]["keys"] == len(USERS) and version["batch"]["scored_at"] == manifest.scored_at
        assert wait_ready(client).json() == {"ready": True, "version": 1}
        assert client.post("/predict", json=rows(7)).json()["predictions"] == [score(1, 7)]


def test_readyz_turns_ready_after_the_first_switch_without_a_predict(store):
    with TestClient(create_app(MODEL)) as client:
        assert wait_ready(client).status_code == 503  # load_initial ran: no batch
        publish(store, 1, switch_from=None)
        assert wait_ready(client).json() == {"ready": True, "version": 1}


def test_readyz_names_the_version_the_answers_come_from_after_a_switch(store):
    publish(store, 1, switch_from=None)
    publish(store, 2)
    with TestClient(create_app(MODEL)) as client:
        assert wait_ready(client).json() == {"ready": True, "version": 1}
        store.switch(MODEL, 2, expected=1)
        assert client.post("/predict", json=rows(7)).json()["model_version"] == 2
        deadline = time.monotonic() + 5 * POINTER_READ_SECONDS  # /readyz re-reads the pointer at most this often
        while client.get("/readyz").json() != {"ready": True, "version": 2}:
            assert time.monotonic() < deadline, client.get("/readyz").json()
            time.sleep(0.05)


def test_a_pointer_deleted_while_serving_is_503_with_a_message(store):
    publish(store, 1, switch_from=None)
    with TestClient(create_app(MODEL)) as client:
        assert client.post("/predict", json=rows(7)).status_code == 200
        store.switch(MODEL, None, expected=1)  # a first deploy whose check failed takes its batch back out
        response = client.post("/predict", json=rows(7))
    assert response.status_code == 503, response.text
    assert "no batch" in response.json()["error"]


def test_a_row_without_user_id_is_422_naming_the_field(store):
    publish(store, 1, switch_from=None)
    with TestClient(create_app(MODEL)) as client:
        response = client.post("/predict", json={"rows": [{"user_id": 7}, {"uid": 7}]})
        assert response.status_code == 422
        (detail,) = response.json()["detail"]
        assert detail["row"] == 1 and detail["field"] == "user_id"
        wrong_type = client.post("/predict", json={"rows": [{"user_id": "seven"}]})
        assert wrong_type.status_code == 422 and wrong_type.json()["detail"][0]["field"] == "user_id"


def test_metrics_count_lookups_by_result_and_time_them(store):
    now = time.time()
    publish(store, 1, switch_from=None)
    publish(store, 2, scored_at=now - 4 * HOUR, expires_at=now - HOUR)  # sealed, expired, not serving yet
    with TestClient(create_app(MODEL)) as client:
        client.post("/predict", json=rows(1, 2, 3))
        client.post("/predict", json=rows(4, 999_998, 999_999))
        store.switch(MODEL, 2, expected=1)
        client.post("/predict", json=rows(5, 6))
        metrics = client.get("/metrics").text
    counted = 'keiko_batch_lookups_total{model="user_value",result="%s"} %s'
    assert counted % ("batch", "4.0") in metrics
    assert counted % ("missing", "2.0") in metrics
    assert counted % ("expired", "2.0") in metrics
    assert counted % ("no_batch", "0.0") in metrics
    assert 'keiko_batch_lookup_seconds_count{model="user_value"} 3.0' in metrics
    assert 'keiko_batch_lookup_seconds_bucket{le="+Inf",model="user_value"} 3.0' in metrics


def test_the_prediction_log_holds_batch_and_fallback_rows_with_user_and_score(store, home):
    publish(store, 1, switch_from=None)
    with TestClient(create_app(MODEL)) as client:  # exiting runs the lifespan's shutdown: the log is written
        assert client.post("/predict", json={"request_id": "a", **rows(7, 999_999)}).status_code == 200
        assert client.post("/predict", json={"request_id": "b", **rows(8)}).status_code == 200
    logged = DuckDBWarehouse(home / "served").query(
        "SELECT request_id, user_id, version, variant, score, model FROM predictions ORDER BY request_id, user_id"
    )
    assert logged.to_pylist() == [
        {"request_id": "a", "user_id": 7, "version": 1, "variant": "batch", "score": score(1, 7), "model": MODEL},
        {"request_id": "a", "user_id": 999_999, "version": 1, "variant": "fallback", "score": PRIOR[1], "model": MODEL},
        {"request_id": "b", "user_id": 8, "version": 1, "variant": "batch", "score": score(1, 8), "model": MODEL},
    ]


def test_requests_during_a_switch_each_answer_one_version_whole(store):
    publish(store, 1, switch_from=None)
    publish(store, 2)
    asked = [*range(1, 21), 999_999]  # twenty known users and one the batches lack
    seen = {1: threading.Event(), 2: threading.Event()}
    counts = {1: 0, 2: 0}
    stop = threading.Event()

    def hammer(url: str) -> list[dict]:
        answers = []
        with httpx.Client(base_url=url, timeout=10) as client:
            while not stop.is_set():
                answer = client.post("/predict", json=rows(*asked)).json()
                answers.append(answer)
                version = answer.get("model_version")
                if version in counts:
                    counts[version] += 1
                    if counts[version] >= 20:
                        seen[version].set()
        return answers

    with serve_in_thread(create_app(MODEL)) as url, ThreadPoolExecutor(6) as pool:
        futures = [pool.submit(hammer, url) for _ in range(6)]
        assert seen[1].wait(timeout=30)
        store.switch(MODEL, 2, expected=1)
        assert seen[2].wait(timeout=30)
        stop.set()
        answers = [answer for future in futures for answer in future.result()]

    assert {a["model_version"] for a in answers} == {1, 2}
    for answer in answers:
        version = answer["model_version"]
        expected = [*(score(version, user) for user in asked[:-1]), PRIOR[version]]
        assert answer["predictions"] == expected, answer
        assert answer["fallback"] == [None] * 20 + ["missing"]


def test_the_inference_protocol_answers_a_batch_model_from_its_batch(store):
    """KServe's V2 REST: a user_id INT64 tensor in, the batch's scores out, through the same lookups."""
    publish(store, 1, switch_from=None)
    request = {
        "id": "bid-7",
        "inputs": [{"name": "user_id", "datatype": "INT64", "shape": [3], "data": [3, 9, 10**9]}],
    }
    with TestClient(create_app(MODEL)) as client:
        wait_ready(client)
        metadata = client.get(f"/v2/models/{MODEL}").json()
        # the key, and the prediction log's other identifier (optional, as for every model)
        assert metadata["versions"] == ["1"] and [i["name"] for i in metadata["inputs"]] == ["user_id", "impression_id"]
        answer = client.post(f"/v2/models/{MODEL}/infer", json=request)
        assert answer.status_code == 200, answer.text
        body = answer.json()
    assert body["id"] == "bid-7" and body["model_version"] == "1"
    assert body["outputs"][0]["data"] == [score(1, 3), score(1, 9), PRIOR[1]]
