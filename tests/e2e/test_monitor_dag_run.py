"""keiko_monitor_ctr under `airflow dags test`: a day of live traffic through the deployed model, judged by the
monitor DAG (its sensors find the day's partitions at once, so nothing defers here)."""

import datetime as dt
import os
import shutil
import subprocess
import sys

import pytest

from conftest import END_DATE, airflow_and_servers, dags_test, live_day_then_monitor

pytestmark = pytest.mark.slow


@pytest.fixture
def environment(tmp_path, warehouse_dir):
    warehouse = shutil.copytree(warehouse_dir, tmp_path / "warehouse")  # traffic writes its day into it
    env = {
        **os.environ,
        "KEIKO_HOME": str(tmp_path / "home"),
        "KEIKO_WAREHOUSE_DIR": str(warehouse),
        "KEIKO_PREDICTION_LOG_URL": (warehouse / "predictions").as_uri(),
        "AIRFLOW_HOME": str(tmp_path / "airflow"),
    }
    with airflow_and_servers(env, "ctr", replicas=2) as (env, _urls):
        yield env


def test_keiko_monitor_ctr_judges_a_day_of_live_traffic(environment, tmp_path):
    dags_test(environment, "ctr")  # v1 in production
    day = END_DATE + dt.timedelta(days=1)
    output = live_day_then_monitor(environment, "ctr", day, rows=30_000, rows_per_request=100)
    for task in ("gate_online", "gate_drift", "gate_volume"):
        assert f"{task} passed" in output, output[-3000:]
    assert f"join_outcomes ctr {day}: 30,000 in the population, 30,000 answered" in output
    page = tmp_path / "home" / "artifacts" / "ctr" / "monitor" / "index.html"
    assert day.isoformat() in page.read_text()
    printed = subprocess.run(
        [sys.executable, "-m", "keiko", "monitor", "ctr", "--days", "3"],
        env=environment, capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    assert day.isoformat() in printed and "v1 100%" in printed and page.as_uri() in printed, printed
