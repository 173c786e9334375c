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

from conftest import DS, run_steps, serve_in_thread
from keiko.config import settings
from keiko.registry import Registry
from keiko.serving.app import create_app
from keiko.stages.train import feature_arrays
from keiko.summary import sample_rows


@pytest.fixture
def rows(run_home):
    import datetime as dt

    from keiko.stages.context import StageContext

    return sample_rows(StageContext.create("ctr", dt.date.fromisoformat(DS)), n=5)


def offline_predictions(home, n):
    from keiko.algorithms import load_model_bytes

    day = home / "artifacts" / "ctr" / DS
    features, _ = feature_arrays(pq.read_table(day / "test.parquet").slice(0, n))
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
    Registry(settings().registry_url).move_alias("ctr", 1)
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


def test_load_refuses_an_artifact_whose_sha_does_not_match(run_home):
    app = create_app("ctr", load_production=False)
    app.state.server.load(1)
    entry = Registry(settings().registry_url).get("ctr", 1)
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
    assert Registry(settings().registry_url).get("ctr", 2).version == 2

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
