"""A ctr canary of two steps under `airflow dags test`, fed by `keiko traffic`: the canary task defers between its
analyses (Airflow's TimeDeltaTrigger, run inline by `dags test`), advances, and promotes the candidate.

v1 is deployed by the run of DS. The run of the day after retrains (v2) and deploys it as a canary (the run's
deploy_strategy); meanwhile days of traffic go through the two replicas as soon as they serve the canary."""

from __future__ import annotations

import datetime as dt
import os
import shutil
import subprocess
import sys
import threading
import time

import httpx
import pytest
import yaml

from conftest import AIRFLOW, END_DATE, ROWS_PER_DAY, airflow_and_servers, dags_test

pytestmark = pytest.mark.slow
RUN_DAY = END_DATE + dt.timedelta(days=1)
CANARY = {
    "steps": [
        {"weight": 0.25, "min_requests": 500, "min_outcomes": 1000},
        {"weight": 0.5, "min_requests": 1000, "min_outcomes": 2000},
    ],
    "max_hold_minutes": 15,
    "check_every_seconds": 3,
    # Nobody answers approve_promotion under this `dags test` (no API server): a retrained candidate significantly
    # worse by chance (1 in 40) would wait for ever instead of promoting.
    "approve_thin_margin": False,
    # The candidate is as good as v1: at the default alpha (0.05) a step's online tests breach by chance in 3.7% of
    # such steps (bench/canary_looks.py), a two-step run in 7%; at 0.001, about one run in 500.
    "analysis": {"alpha": 0.001},
}


@pytest.fixture
def environment(tmp_path, warehouse_dir, project_copy):
    from keiko.synth import World, daily_rows, generate_day, write_day

    model_yaml = project_copy / "include" / "models" / "ctr" / "model.yaml"
    config = yaml.safe_load(model_yaml.read_text())
    config["deploy"]["canary"] = CANARY
    model_yaml.write_text(yaml.safe_dump(config, sort_keys=False))
    warehouse = shutil.copytree(warehouse_dir, tmp_path / "warehouse")  # the run's day and traffic's days go into it
    write_day(warehouse, RUN_DAY, generate_day(World.from_seed(7), RUN_DAY, daily_rows(RUN_DAY, ROWS_PER_DAY, 7), 7))
    env = {
        **os.environ,
        "KEIKO_HOME": str(tmp_path / "home"),
        "KEIKO_WAREHOUSE_DIR": str(warehouse),
        "KEIKO_PREDICTION_LOG_URL": (warehouse / "predictions").as_uri(),
        "AIRFLOW_HOME": str(tmp_path / "airflow"),
    }
    with airflow_and_servers(env, "ctr", replicas=2) as (env, urls):
        yield env, urls


class Traffic(threading.Thread):
    """Once the replicas serve a canary, `keiko traffic` for one day after another until stopped."""

    def __init__(self, env: dict[str, str], urls: list[str]) -> None:
        super().__init__(daemon=True)
        self.env, self.urls, self.days = env, urls, []
        self.stopping = threading.Event()

    def run(self) -> None:
        while not self.stopping.is_set() and httpx.get(f"{self.urls[0]}/version").json()["canary"] is None:
            time.sleep(1)
        day = RUN_DAY + dt.timedelta(days=1)
        while not self.stopping.is_set():
            command = [sys.executable, "-m", "keiko", "traffic", "--model", "ctr", "--day", day.isoformat()]
            subprocess.run([*command, "--rows", "4000"], env=self.env, check=True, capture_output=True, timeout=300)
            self.days.append(day)
            day += dt.timedelta(days=1)


def test_a_two_step_canary_runs_under_airflow_dags_test_and_promotes(environment):
    from keiko.contract import CanaryRecord, RunLayout
    from keiko.registry import open_registry
    from keiko.storage import ArtifactStore

    env, urls = environment
    dags_test(env, "ctr")  # v1 in production
    traffic = Traffic(env, urls)
    traffic.start()
    started = time.monotonic()
    try:
        result = subprocess.run(
            [AIRFLOW, "dags", "test", "keiko_ctr", RUN_DAY.isoformat(), "-c", '{"deploy_strategy": "canary"}'],
            env=env, capture_output=True, text=True, timeout=1500,
        )  # fmt: skip
    finally:
        traffic.stopping.set()
        traffic.join(timeout=300)
    output = result.stdout + result.stderr
    assert result.returncode == 0 and "DagRun Finished" in output and "state=success" in output, output[-4000:]

    home = env["KEIKO_HOME"]
    store = ArtifactStore(f"file://{home}/artifacts")
    record = RunLayout(store, "ctr", RUN_DAY.isoformat()).find(
        RunLayout(store, "ctr", RUN_DAY.isoformat()).canary_record, CanaryRecord
    )
    assert record.state == "promoted" and (record.version, record.stable_version) == (2, 1)
    assert [(e.event, e.weight) for e in record.timeline] == [("started", 0.25), ("advanced", 0.5), ("promoted", 0.5)]
    passed = [v for v in record.verdicts if v.verdict == "pass"]
    assert [v.step for v in passed] == [1, 2]
    assert passed[0].outcomes["canary"] >= 1000 and passed[1].outcomes["canary"] >= 2000
    assert open_registry(f"sqlite:///{home}/registry.db").alias("ctr") == 2
    for url in urls:
        serving = httpx.get(f"{url}/version").json()
        assert (serving["version"], serving["canary"]) == (2, None)
    # The waits were Airflow's: deferred to its trigger between analyses, no worker held.
    assert "still running: next call in" in output and "[DAG TEST] running trigger in line" in output
    print(
        f"canary under dags test: {time.monotonic() - started:.0f}s, traffic days {[str(d) for d in traffic.days]}, "
        f"timeline {[(e.event, e.at) for e in record.timeline]}, passes {[(v.step, v.outcomes) for v in passed]}"
    )
