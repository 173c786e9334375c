"""keiko_ctr end to end under `airflow dags test`, against a real model server on loopback."""

import datetime as dt
import json
import os
import shutil
import subprocess
import sys

import httpx
import numpy as np
import pyarrow.parquet as pq
import pytest

from conftest import AIRFLOW, DS, ROOT, airflow_and_servers, dags_test

pytestmark = pytest.mark.slow


@pytest.fixture
def environment(tmp_path, warehouse_dir):
    env = {
        **os.environ,
        "KEIKO_HOME": str(tmp_path / "home"),
        "KEIKO_WAREHOUSE_DIR": str(warehouse_dir),
        "AIRFLOW_HOME": str(tmp_path / "airflow"),
    }
    with airflow_and_servers(env, "ctr") as (env, urls):
        yield env, urls[0]


def test_dag_retrains_registers_deploys_and_the_server_answers(environment, tmp_path):
    env, url = environment
    began = dt.datetime.now(dt.UTC)
    first = dags_test(env, "ctr")
    assert "production alias moved none -> v1" in first
    assert "gate_serving passed" in first  # the live replica answers the golden set as offline
    # The grid's duration: the run started when its first task did, not at its logical date (keiko.dags_test).
    subprocess.run([sys.executable, "-m", "keiko.dags_test"], env=env, check=True, capture_output=True)
    listed = subprocess.run([AIRFLOW, "dags", "list-runs", "keiko_ctr", "-o", "json"], env=env, capture_output=True)
    (run,) = json.loads(listed.stdout)
    assert dt.datetime.fromisoformat(run["start_date"]) >= began, run

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
    features, _ = feature_arrays(pq.read_table(day / "test.parquet").slice(0, 20), "impression_id")
    offline = load_model_bytes((day / "model.npz").read_bytes()).predict(features)
    assert answer["model_version"] == 1
    np.testing.assert_allclose(answer["predictions"], offline, rtol=0, atol=1e-12)

    # A second run of the same day compares against the model the first one deployed.
    second = dags_test(env, "ctr")
    assert "production v1: logloss" in second
    assert "already registered" in second and "v1 was already production" in second
    assert [v.version for v in registry.list("ctr")] == [1]

    # A third run trains another candidate (another seed), deploys it, and its gate_serving fails (a latency
    # budget nothing meets): the check changes nothing, the DAG's rollback task reverts, and the run fails.
    project = tmp_path / "project"
    shutil.copytree(ROOT / "include", project / "include")
    model_yaml = project / "include" / "models" / "ctr" / "model.yaml"
    edited = (
        model_yaml.read_text().replace("seed: 0", "seed: 1").replace("p95_latency_ms: 100", "p95_latency_ms: 0.001")
    )
    model_yaml.write_text(edited)
    third = subprocess.run(
        [AIRFLOW, "dags", "test", "keiko_ctr", DS],
        env={**env, "KEIKO_PROJECT_DIR": str(project)},
        capture_output=True,
        text=True,
        timeout=900,
    )
    output = third.stdout + third.stderr
    assert third.returncode != 0 and "DagRun failed" in output, output[-3000:]  # gate_serving decides the run
    assert "production alias moved v1 -> v2" in output and "gate_serving FAILED" in output
    assert "rolled back to v1 (replicas and production alias)" in output
    assert registry.alias("ctr") == 1 and httpx.get(f"{url}/version").json()["version"] == 1
    moves = registry.history("ctr")
    assert [(m["from_version"], m["to_version"]) for m in moves] == [(None, 1), (1, 2), (2, 1)]
    assert moves[-1]["note"] == f"gate_serving failed {DS}"
