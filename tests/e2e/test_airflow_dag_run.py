"""keiko_ctr end to end under `airflow dags test`, against a real model server on loopback."""

import os
import socket
import subprocess
import sys
import time

import httpx
import numpy as np
import pyarrow.parquet as pq
import pytest

from conftest import DS, ROOT

pytestmark = pytest.mark.slow
AIRFLOW = str(ROOT / ".venv" / "bin" / "airflow") if (ROOT / ".venv" / "bin" / "airflow").exists() else "airflow"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def environment(tmp_path, warehouse_dir):
    port = free_port()
    env = {
        **os.environ,
        "KEIKO_HOME": str(tmp_path / "home"),
        "KEIKO_WAREHOUSE_DIR": str(warehouse_dir),
        "AIRFLOW_HOME": str(tmp_path / "airflow"),
        "KEIKO_SERVING_URLS_CTR": f"http://127.0.0.1:{port}",
    }
    subprocess.run([AIRFLOW, "db", "migrate"], env=env, check=True, capture_output=True)
    server = subprocess.Popen(
        [sys.executable, "-m", "keiko", "serve", "--model", "ctr", "--port", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.STDOUT,
    )
    url = env["KEIKO_SERVING_URLS_CTR"]
    for _ in range(150):
        try:
            if httpx.get(f"{url}/healthz").status_code == 200:
                break
        except httpx.TransportError:
            time.sleep(0.1)
    yield env, url
    server.terminate()
    server.wait(timeout=10)


def dags_test(env) -> str:
    result = subprocess.run(
        [AIRFLOW, "dags", "test", "keiko_ctr", DS], env=env, capture_output=True, text=True, timeout=600
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-3000:]
    return output


def test_dag_retrains_registers_deploys_and_the_server_answers(environment, tmp_path):
    env, url = environment
    first = dags_test(env)
    assert "production alias moved vNone -> v1" in first
    assert "gate_serving passed" in first  # the live replica answers the golden set as offline

    from keiko.algorithms import load_model_bytes
    from keiko.registry import open_registry
    from keiko.stages.train import feature_arrays

    registry = open_registry(f"sqlite:///{tmp_path / 'home' / 'registry.db'}")
    assert registry.alias("ctr") == 1
    entry = registry.get("ctr", 1)
    assert (entry.window_start, entry.window_end) == ("2026-11-14", DS)  # ctr's 8 days
    assert entry.metrics["bayes_optimal_logloss"] < entry.metrics["test"]["logloss"]

    status = httpx.get(f"{url}/version").json()
    assert (status["version"], status["artifact_sha256"]) == (1, entry.artifact_sha256)
    day = tmp_path / "home" / "artifacts" / "ctr" / DS
    raw = pq.read_table(day / "raw.parquet").to_pandas()
    rows = raw[raw["dt"] == DS].head(20).drop(columns=["dt", "clicked", "impression_id", "user_id"])
    rows["event_time"] = rows["event_time"].map(lambda t: t.isoformat())
    answer = httpx.post(f"{url}/predict", json={"rows": rows.to_dict("records")}).json()
    features, _ = feature_arrays(pq.read_table(day / "test.parquet").slice(0, 20))
    offline = load_model_bytes((day / "model.npz").read_bytes()).predict(features)
    assert answer["model_version"] == 1
    np.testing.assert_allclose(answer["predictions"], offline, rtol=0, atol=1e-12)

    # A second run of the same day compares against the model the first one deployed.
    second = dags_test(env)
    assert "production v1: logloss" in second
    assert "already registered" in second and "v1 was already production" in second
    assert [v.version for v in registry.list("ctr")] == [1]
