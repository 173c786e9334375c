"""keiko_cvr (CatBoost) end to end under `airflow dags test`, deployed to two real model-server replicas.

cvr learns from clicks only (~3% of impressions) over a 14-day window, so it gets its own warehouse:
15 days x 150k impressions (~4,300 clicks and ~420 conversions a day), enough for its gates' bands.
"""

import datetime as dt
import os

import httpx
import numpy as np
import pyarrow.parquet as pq
import pytest

from conftest import DS, END_DATE, airflow_and_servers, dags_test, live_day_then_monitor

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def cvr_warehouse(tmp_path_factory):
    from keiko.synth import write_warehouse

    directory = tmp_path_factory.mktemp("cvr-warehouse")
    write_warehouse(directory, END_DATE, 15, 150_000, seed=7, progress=lambda _msg: None)
    return directory


@pytest.fixture
def environment(tmp_path, cvr_warehouse):
    env = {
        **os.environ,
        "KEIKO_HOME": str(tmp_path / "home"),
        "KEIKO_WAREHOUSE_DIR": str(cvr_warehouse),
        "KEIKO_PREDICTION_LOG_URL": (cvr_warehouse / "predictions").as_uri(),  # the monitor reads it there
        "AIRFLOW_HOME": str(tmp_path / "airflow"),
    }
    with airflow_and_servers(env, "cvr", replicas=2) as (env, urls):
        yield env, urls


def test_cvr_dag_trains_catboost_registers_and_deploys_to_both_replicas(environment, tmp_path):
    env, urls = environment
    output = dags_test(env, "cvr")
    assert "production alias moved none -> v1" in output
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
    features, _ = feature_arrays(pq.read_table(day / "test.parquet").slice(0, 20), "impression_id")
    offline = load_model_bytes((day / "model.cbm").read_bytes()).predict(features)
    for url in urls:
        answer = httpx.post(f"{url}/predict", json={"rows": rows.to_dict("records")}).json()
        assert answer["model_version"] == 1
        np.testing.assert_allclose(answer["predictions"], offline, rtol=0, atol=1e-12)


def test_keiko_monitor_cvr_judges_a_day_of_live_traffic_once_its_conversions_are_in(environment):
    env, _ = environment
    dags_test(env, "cvr")  # v1 in production
    day = END_DATE + dt.timedelta(days=1)
    output = live_day_then_monitor(env, "cvr", day, rows=150_000, rows_per_request=500)
    # The run for day+3 judges day (conversions come within 72 h); only clicked impressions are its population.
    assert f"join_outcomes cvr {day}:" in output and "gate_online passed" in output, output[-3000:]
    assert "gate_drift passed" in output and "gate_volume passed" in output
