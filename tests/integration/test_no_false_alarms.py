"""Fourteen consecutive clean days (two weekly cycles of the generator) pass every gate, deploy
included: the gates do not cry wolf. The observed ranges it prints are what the thresholds in
include/models/ctr/model.yaml were chosen from."""

from __future__ import annotations

import datetime as dt

import pytest

from conftest import END_DATE, ROWS_PER_DAY, UP_TO_REGISTER, run_step, serve_in_thread
from keiko.config import settings
from keiko.gates.headroom import format_ranges, observed_ranges
from keiko.modeldef import load_model
from keiko.registry import open_registry
from keiko.serving.app import create_app
from keiko.stages.context import StageContext
from keiko.synth import write_warehouse

pytestmark = [pytest.mark.slow, pytest.mark.server]

RUN_DAYS = [END_DATE - dt.timedelta(days=offset) for offset in range(13, -1, -1)]


def test_fourteen_clean_days_raise_no_alarm(tmp_path, monkeypatch):
    monkeypatch.setenv("KEIKO_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("KEIKO_WAREHOUSE_DIR", str(tmp_path / "warehouse"))
    window_days = load_model("ctr").config.window_days
    write_warehouse(tmp_path / "warehouse", END_DATE, len(RUN_DAYS) + window_days - 1, ROWS_PER_DAY, progress=print)

    alarms = []
    with serve_in_thread(create_app("ctr")) as url:
        monkeypatch.setenv("KEIKO_SERVING_URLS_CTR", url)
        for day in RUN_DAYS:
            for step in (*UP_TO_REGISTER, "deploy"):
                code = run_step(step, day.isoformat())
                if code != 0:
                    alarms.append(f"{day} {step} exited {code}")
                    break

    ranges = observed_ranges([StageContext.create("ctr", day) for day in RUN_DAYS])
    print(f"\nctr gates over {len(RUN_DAYS)} clean days, ~{ROWS_PER_DAY:,} rows/day:\n{format_ranges(ranges)}")
    assert alarms == []
    checks = {(r["check"], r["column"]) for r in ranges}
    assert {("raw.daily", "rows / median"), ("features.drift", "app_id"), ("evaluation.blessing", "auc")} <= checks
    assert ("evaluation.blessing", "logloss_regression") in checks  # production existed from day 2 on
    registry = open_registry(settings().registry_url)
    assert all(v.status == "registered" for v in registry.list("ctr"))
    assert registry.alias("ctr") is not None
