"""keiko_cvr (CatBoost) end to end under `airflow dags test`, deployed to two real model-server replicas.

cvr learns from clicks only (~3% of impressions) over a 14-day window, so it gets its own warehouse:
15 days x 150k impressions (~4,300 clicks and ~420 conversions a day), enough for its gates' bands.
"""

import os
import subprocess
import sys
import time

import httpx
import numpy as np
import pyarrow.parquet as pq
import pytest

from conftest import DS, END_DATE, ROOT, free_port

pytestmark = pytest.mark.slow
AIRFLOW = str(ROOT / ".venv" / "bin" / "airflow") if (ROOT / ".venv" / "bin" / "airflow").exists() else "airflow"


@pytest.fixture(scope="module")
def cvr_warehouse(tmp_path_factory):
    from keiko.synth import write_warehouse

    directory = tmp_path_factory.mktemp("cvr-warehouse")
    write_warehouse(directory, END_DATE, 15, 150_000, seed=7, progress=lambda _msg: None)
    return directory


@pytest.fixture
def environment(tmp_path, cvr_warehouse):
    port = free_port()
    while free_port() == port + 1:  # the second replica takes the next port
        port = free_port()
    env = {
        **os.environ,
        "KEIKO_HOME": str(tmp_path / "home"),
        "KEIKO_WAREHOUSE_DIR": str(cvr_warehouse),
        "AIRFLOW_HOME": str(tmp_path / "airflow"),
        "KEIKO_SERVING_URLS_CVR": f"http://127.0.0.1:{port},http://127.0.0.1:{port + 1}",
    }
    subprocess.run([AIRFLOW, "db", "migrate"], env=env, check=True, capture_output=True)
    server = subprocess.Popen(
        [sys.executable, "-m", "keiko", "serve", "--model", "cvr", "--port", str(port), "--replicas", "2"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.STDOUT,
    )
    urls = env["KEIKO_SERVING_URLS_CVR"].split(",")
    for url in urls:
        for _ in range(300):
            try:
                if httpx.get(f"{url}/healthz").status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.1)
    yield env, urls
    server.terminate()
    server.wait(timeout=10)


def test_cvr_dag_trains_catboost_registers_and_deploys_to_both_replicas(environment, tmp_path):
    env, urls = environment
    result = subprocess.run(
        [AIRFLOW, "dags", "test", "keiko_cvr", DS], env=env, capture_output=True, text=True, timeout=900
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-3000:]
    assert "production alias moved vNone -> v1" in output
    assert "gate_serving passed" in output

    from keiko.algorithms import load_model_bytes
    from keiko.registry import open_registry
    from keiko.stages.train import feature_arrays

    registry = open_registry(f"sqlite:///{tmp_path / 'home' / 'registry.db'}")
    entry = registry.get("cvr", 1)
    assert entry.algorithm == "catboost" and entry.artifact_uri.endswith("/model.cbm")
    assert (entry.window_start, entry.window_end) == ("2026-11-08", DS)  # 14 days
    assert entry.metrics["test"]["logloss"] < entry.metrics["bayes_optimal_logloss"] * 1.05

    day = tmp_path / "home" / "artifacts" / "cvr" / DS
    raw = pq.read_table(day / "raw.parquet").to_pandas()
    rows = raw[raw["dt"] == DS].head(20).drop(columns=["dt", "converted", "impression_id", "user_id"])
    rows["event_time"] = rows["event_time"].map(lambda t: t.isoformat())
    features, _ = feature_arrays(pq.read_table(day / "test.parquet").slice(0, 20))
    offline = load_model_bytes((day / "model.cbm").read_bytes()).predict(features)
    for url in urls:
        answer = httpx.post(f"{url}/predict", json={"rows": rows.to_dict("records")}).json()
        assert answer["model_version"] == 1
        np.testing.assert_allclose(answer["predictions"], offline, rtol=0, atol=1e-12)
