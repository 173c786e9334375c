import json
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
import pyarrow.parquet as pq
import pytest
from starlette.testclient import TestClient

from conftest import DS, register_variant, run_steps, serve_in_thread, v1_bytes
from keiko.config import settings
from keiko.errors import KeikoError
from keiko.registry import open_registry
from keiko.serving.app import create_app
from keiko.serving.client import ModelServerClient
from keiko.stages.train import feature_arrays
from keiko.summary import sample_rows

pytestmark = pytest.mark.server


@pytest.fixture
def rows(run_home):
    import datetime as dt

    from keiko.stages.context import StageContext

    return sample_rows(StageContext.create("ctr", dt.date.fromisoformat(DS)), n=5)


def offline_predictions(home, n):
    from keiko.algorithms import load_model_bytes

    day = home / "artifacts" / "ctr" / DS
    features, _ = feature_arrays(pq.read_table(day / "test.parquet").slice(0, n), "impression_id")
    return load_model_bytes((day / "model.npz").read_bytes()).predict(features)


def test_not_ready_until_a_model_is_loaded(run_home):
    with TestClient(create_app("ctr")) as client:
        time.sleep(0.3)
        assert client.get("/healthz").status_code == 200
        response = client.get("/readyz")
        assert response.status_code == 503
        assert "no production version" in response.json()["reason"]
        assert client.post("/predict", json={"rows": []}).status_code == 503


def test_loads_production_at_start_and_predicts_like_training(run_home, rows):
    open_registry(settings().registry_url).move_alias("ctr", 1)
    with TestClient(create_app("ctr")) as client:
        for _ in range(50):
            if client.get("/readyz").status_code == 200:
                break
            time.sleep(0.1)
        assert client.get("/version").json()["version"] == 1
        answer = client.post("/predict", json={"rows": rows}).json()
    assert answer["model_version"] == 1
    np.testing.assert_allclose(answer["predictions"], offline_predictions(run_home, 5), rtol=0, atol=1e-12)


def test_malformed_rows_get_422_naming_row_and_field(run_home, rows):
    app = create_app("ctr", load_production=False)
    app.state.server.load(1)
    bad = [dict(rows[0]), {**rows[1], "position": "top"}, {k: v for k, v in rows[2].items() if k != "os"}]
    with TestClient(app) as client:
        response = client.post("/predict", json={"rows": bad})
        assert response.status_code == 422
        detail = response.json()["detail"]
        assert {"row": 1, "field": "position"}.items() <= detail[0].items()
        assert {"row": 2, "field": "os", "error": "Field required"}.items() <= detail[1].items()
        assert client.post("/predict", content=b"not json").status_code == 422
        nan_row = json.dumps({"rows": [{**rows[0], "floor_price": float("nan")}]})  # NaN: not JSON, yet sent
        response = client.post("/predict", content=nan_row, headers={"content-type": "application/json"})
        assert response.status_code == 422 and response.json()["detail"][0]["field"] == "floor_price"
        assert client.post("/predict", json={"rows": []}).status_code == 422
        huge = client.post("/predict", json={"rows": [{**rows[0], "app_id": 2**63}]})  # beyond int64
        assert huge.status_code == 422 and huge.json()["detail"][0]["field"] == "app_id"


def test_load_refuses_an_artifact_whose_sha_does_not_match(run_home):
    app = create_app("ctr", load_production=False)
    app.state.server.load(1)
    entry = open_registry(settings().registry_url).get("ctr", 1)
    assert "/ctr/versions/" in entry.artifact_uri  # registered artifacts are content-addressed
    model_file = Path(entry.artifact_uri.removeprefix("file://"))
    model_file.write_bytes(model_file.read_bytes() + b"tampered")
    with TestClient(app) as client:
        response = client.post("/admin/load", json={"version": 1})
        assert response.status_code == 409
        assert "sha256 mismatch" in response.json()["error"]
        assert client.get("/version").json()["version"] == 1  # still serving what it had
        assert client.post("/admin/load", json={"version": "x"}).status_code == 422


def test_hot_swap_with_requests_in_flight(run_home, rows, project_copy, monkeypatch):
    # A second version: same data, different hashing, so its artifact (and sha) differ.
    path = project_copy / "include" / "models" / "ctr" / "model.yaml"
    path.write_text(path.read_text().replace("hash_bits: 20", "hash_bits: 18"))
    run_steps("features", "gate_features", "train", "gate_training", "evaluate", "gate_evaluation", "register")
    assert open_registry(settings().registry_url).get("ctr", 2).version == 2

    app = create_app("ctr", load_production=False)
    app.state.server.load(1)
    stop = threading.Event()

    def hammer(url):
        seen = []
        with httpx.Client(base_url=url, timeout=10) as client:
            while not stop.is_set():
                response = client.post("/predict", json={"rows": rows})
                seen.append((response.status_code, response.json().get("model_version")))
        return seen

    with serve_in_thread(app) as url, ThreadPoolExecutor(4) as pool:
        futures = [pool.submit(hammer, url) for _ in range(4)]
        time.sleep(0.5)
        swap = httpx.post(f"{url}/admin/load", json={"version": 2}, timeout=30)
        time.sleep(0.5)
        stop.set()
        per_worker = [f.result() for f in futures]
    assert swap.status_code == 200, swap.text
    seen = [item for worker in per_worker for item in worker]
    assert {status for status, _ in seen} == {200}, json.dumps(seen[:5])
    assert {version for _, version in seen} == {1, 2}
    for worker in per_worker:
        versions = [version for _, version in worker]
        # Once a client has seen the new version, it never gets the old one again.
        assert 1 not in versions[versions.index(2) :]


def readyz_once_settled(client) -> httpx.Response:
    """/readyz once the start-up load has finished, one way or the other."""
    for _ in range(300):
        response = client.get("/readyz")
        if response.status_code == 200 or response.json()["reason"] != "loading":
            return response
        time.sleep(0.05)
    return response


def test_admin_load_needs_the_bearer_token_when_one_is_configured(run_home, monkeypatch):
    monkeypatch.delenv("KEIKO_ADMIN_TOKEN", raising=False)
    v2 = register_variant(v1_bytes(), window_start="2026-11-09")
    app = create_app("ctr", load_production=False, admin_token="s3cret")
    app.state.server.load(1)
    with TestClient(app) as client:
        for headers in (
            {},
            {"authorization": "Bearer wrong"},
            {"authorization": "s3cret"},
            {"authorization": "Bearer "},
            {"authorization": "Bearer sécret".encode()},  # not ASCII: still a plain 401
        ):
            response = client.post("/admin/load", json={"version": v2}, headers=headers)
            assert response.status_code == 401, headers
            assert "Authorization: Bearer" in response.json()["error"]
            assert client.get("/version").json()["version"] == 1
        assert client.post("/predict", json={"rows": []}).status_code == 422  # /predict needs no token
        response = client.post("/admin/load", json={"version": v2}, headers={"authorization": "Bearer s3cret"})
        assert response.status_code == 200, response.text
        assert response.json()["version"] == v2
        assert client.get("/version").json()["version"] == v2


def test_the_client_sends_the_token_from_the_environment(run_home, monkeypatch):
    v2 = register_variant(v1_bytes(), window_start="2026-11-09")
    monkeypatch.setenv("KEIKO_ADMIN_TOKEN", "s3cret")  # the server's token too (create_app's default)
    app = create_app("ctr", load_production=False)
    app.state.server.load(1)
    with serve_in_thread(app) as url:
        with ModelServerClient(url) as client:
            assert client.load(v2)["version"] == v2
            assert client.version()["version"] == v2
        monkeypatch.setenv("KEIKO_ADMIN_TOKEN", "not-the-token")
        with ModelServerClient(url) as client, pytest.raises(KeikoError, match="refused to load v1"):
            client.load(1)
        monkeypatch.delenv("KEIKO_ADMIN_TOKEN")
        with ModelServerClient(url) as client, pytest.raises(KeikoError, match="refused to load v1"):
            client.load(1)
        assert httpx.get(f"{url}/version").json()["version"] == v2


def test_keiko_model_version_pins_the_version_loaded_at_start(run_home, monkeypatch, rows):
    open_registry(settings().registry_url).move_alias("ctr", 1)
    v2 = register_variant(v1_bytes(), window_start="2026-11-09")
    monkeypatch.setenv("KEIKO_MODEL_VERSION", str(v2))
    with TestClient(create_app("ctr")) as client:
        assert readyz_once_settled(client).json() == {"ready": True, "version": v2}
        assert client.get("/version").json()["version"] == v2
        assert client.post("/predict", json={"rows": rows}).json()["model_version"] == v2
    assert open_registry(settings().registry_url).alias("ctr") == 1  # pinning a server moves no alias


def test_a_pinned_version_that_cannot_load_is_named_by_readyz(run_home, monkeypatch):
    open_registry(settings().registry_url).move_alias("ctr", 1)
    monkeypatch.setenv("KEIKO_MODEL_VERSION", "999")
    with TestClient(create_app("ctr")) as client:
        response = readyz_once_settled(client)
        assert response.status_code == 503
        assert "KEIKO_MODEL_VERSION=999" in response.json()["reason"]
        assert "no version 999" in response.json()["reason"]
        assert client.get("/healthz").status_code == 200
        assert client.get("/version").json()["version"] is None  # not production v1 instead
        assert client.post("/predict", json={"rows": []}).status_code == 503


def test_the_bearer_scheme_is_case_insensitive(run_home):
    v2 = register_variant(v1_bytes(), window_start="2026-11-09")
    app = create_app("ctr", load_production=False, admin_token="s3cret")
    app.state.server.load(1)
    with TestClient(app) as client:
        for version, scheme in ((v2, "bearer"), (1, "BEARER"), (v2, "beArer")):
            response = client.post(
                "/admin/load", json={"version": version}, headers={"authorization": f"{scheme} s3cret"}
            )
            assert response.status_code == 200, (scheme, response.text)
            assert client.get("/version").json()["version"] == version
        assert (
            client.post("/admin/load", json={"version": 1}, headers={"authorization": "bearer S3CRET"}).status_code
            == 401
        )


@pytest.mark.parametrize(
    "body",
    [b'{"version": "abc"}', b'{"version": "1"}', b'{"version": 1.5}', b'{"version": true}', b'{"version": 0}',
     b'{"version": Infinity}', b'{"version": 1e400}', b'{"version": null}', b"{}", b"[1]", b'{"version": 1, "x": 2}',
     b"not json", b""],
)  # fmt: skip
def test_admin_load_answers_422_to_a_version_that_is_not_a_positive_integer(run_home, body):
    app = create_app("ctr", load_production=False)
    app.state.server.load(1)
    with TestClient(app) as client:
        response = client.post("/admin/load", content=body, headers={"content-type": "application/json"})
        assert response.status_code == 422, response.text
        assert response.json()["error"] == 'expected {"version": <integer>}'
        assert response.json()["detail"][0]["field"] in ("version", "(body)", "x")
        assert client.get("/version").json()["version"] == 1


def test_without_a_token_admin_calls_need_a_json_body(run_home, monkeypatch):
    """What a web page can send to another origin without a CORS preflight (text/plain, a form) loads nothing."""
    monkeypatch.delenv("KEIKO_ADMIN_TOKEN", raising=False)
    v2 = register_variant(v1_bytes(), window_start="2026-11-09")
    app = create_app("ctr", load_production=False)
    app.state.server.load(1)
    with TestClient(app) as client:
        for content_type in ("text/plain", "text/plain;charset=UTF-8", "application/x-www-form-urlencoded", None):
            headers = {"content-type": content_type} if content_type else {}
            response = client.post("/admin/load", content=f'{{"version": {v2}}}', headers=headers)
            assert response.status_code == 415, content_type
            assert "Content-Type: application/json" in response.json()["error"]
            assert client.get("/version").json()["version"] == 1
        headers = {"content-type": "Application/JSON; charset=utf-8"}
        assert client.post("/admin/load", content=f'{{"version": {v2}}}', headers=headers).status_code == 200
        assert client.get("/version").json()["version"] == v2


def test_values_training_never_saw_are_counted_per_field_in_metrics_and_version(run_home, rows):
    profile = json.loads((run_home / "artifacts" / "ctr" / DS / "profile.json").read_text())["columns"]
    # A row of values all seen in training, and one with three values training never saw.
    seen = {**rows[0], **{name: column["seen"][0] for name, column in profile.items() if "seen" in column}}
    seen["floor_price"] = profile["floor_price"]["min"]
    unseen = {**seen, "country": "XX", "position": 99, "floor_price": profile["floor_price"]["max"] * 10}
    app = create_app("ctr", load_production=False)
    app.state.server.load(1)
    with TestClient(app) as client:
        assert client.post("/predict", json={"rows": [seen, seen]}).status_code == 200
        assert client.post("/predict", json={"rows": [unseen]}).status_code == 200
        assert client.post("/admin/load", json={"version": 1}).status_code == 200  # a reload keeps counting
        assert client.post("/predict", json={"rows": [seen]}).status_code == 200
        metrics, described = client.get("/metrics").text, client.get("/version").json()["unseen_values"]
    counted = {name: field["count"] for name, field in described["fields"].items() if field["count"]}
    assert counted == {"country": 1, "position": 1, "floor_price": 1}
    assert described["rows"] == 4
    assert described["fields"]["country"]["kind"] == "unseen_category"
    assert described["fields"]["floor_price"]["kind"] == "out_of_range"
    assert set(described["not_judged"]) == {"event_time"}
    assert (
        'keiko_serving_unseen_values_total{field="country",kind="unseen_category",model="ctr",version="1"} 1.0'
        in metrics
    )
    assert 'keiko_serving_unseen_values_total{field="os",kind="unseen_category",model="ctr",version="1"} 0.0' in metrics
    assert 'keiko_serving_rows_total{model="ctr",version="1"} 4.0' in metrics
    assert 'keiko_serving_version{model="ctr"} 1.0' in metrics
