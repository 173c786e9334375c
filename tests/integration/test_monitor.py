"""keiko_monitor_<model>'s steps on days of live traffic through two replicas serving ctr v1: fourteen clean days
raise no alarm; each world change `keiko traffic --shift` makes is caught on its first day, by the metric that
moved; a slow decline of training rows, which gate_raw's trailing median follows down, is caught by the trend.

Detection days, at 30,000 impressions a day (~850 clicks):
- click-rate=0.5: calibration falls to ~1/1.5 = 0.67 against a tolerance of 0.85..1.15; its noise is ~3.4 %
  (1/sqrt(850 clicks)), so the breach is ~5 sd past the band on day 1. (A +20 % change reads 0.83 +- 0.03 and is
  caught on day 1 only about 3 times in 4: model.yaml's tolerance is for 4 sd of clean noise.)
- app-share=0.2: app 57's share goes from 1.4 % to 20 %: KL(app_id) ~0.4 against 0.05 (clean: at most ~0.01).
- encoding=upper: every served `os` is one training never saw: unseen share 100 % against 1 %.
"""

import dataclasses
import datetime as dt
import json
import shutil

import pytest

from conftest import DS, run_step, serve_replicas
from keiko.cli import main
from keiko.config import settings
from keiko.contract import JoinOutcomesResult, RunLayout
from keiko.pipeline import MONITOR, MONITOR_DAG
from keiko.registry import open_registry
from keiko.storage import open_store

pytestmark = [pytest.mark.server, pytest.mark.slow]
FIRST_DAY = dt.date.fromisoformat(DS) + dt.timedelta(days=1)
ROWS_PER_REQUEST = 100  # the day in a few hundred requests: the monitor judges rows, not request shapes


@pytest.fixture
def live(run_home, warehouse_dir, tmp_path, monkeypatch):
    """ctr v1 on two replicas logging into a private copy of the warehouse, as production's servers do."""
    warehouse = shutil.copytree(warehouse_dir, tmp_path / "warehouse")
    monkeypatch.setenv("KEIKO_WAREHOUSE_DIR", str(warehouse))
    monkeypatch.setenv("KEIKO_PREDICTION_LOG_URL", (warehouse / "predictions").as_uri())
    monkeypatch.setenv("KEIKO_MODEL_VERSION", "1")  # registered, not deployed
    with serve_replicas(2) as (apps, urls):
        monkeypatch.setenv("KEIKO_SERVING_URLS_CTR", ",".join(urls))
        yield apps


def live_day(apps, day: dt.date, *shifts: str) -> None:
    """A day of traffic (as many impressions as the day before: ~30,000), every answer written to the log."""
    argv = ["traffic", "--model", "ctr", "--day", day.isoformat(), "--rows-per-request", str(ROWS_PER_REQUEST)]
    assert main([*argv, *(a for s in shifts for a in ("--shift", s))]) == 0
    for app in apps:
        app.state.server.prediction_log.flush()


def monitor(day: dt.date) -> dict[str, int]:
    """The monitor's steps for `day`, in-process, in order; each one's exit code."""
    return {step.task_id: run_step(step.task_id, day.isoformat()) for step in MONITOR}


def result(day: dt.date, task: str) -> dict:
    layout = RunLayout(open_store(settings()), "ctr", day.isoformat(), MONITOR_DAG)
    return json.loads(layout.store.read_bytes(layout.step_result(task)))


def failed(day: dt.date, task: str) -> list[tuple[str, str]]:
    return [(o["suite"], o["column"]) for o in result(day, task)["outcomes"] if not o["passed"]]


def test_fourteen_clean_days_raise_no_alarm(live, capsys):
    ranges: dict[str, list[float]] = {}
    for offset in range(14):
        day = FIRST_DAY + dt.timedelta(days=offset)
        live_day(live, day)
        codes = monitor(day)
        assert codes == dict.fromkeys(codes, 0), (day, codes, capsys.readouterr().out[-3000:])
        online = result(day, "gate_online")["versions"]["1"]
        drift = result(day, "gate_drift")
        figures = {
            "calibration": online["online"]["calibration"],
            "logloss_gap": online["logloss_gap"],
            "auc_drop": online["auc_drop"],
            "max_kl": max(drift["divergence"]["1"].values()),
            "max_unseen": max(drift["unseen_share"]["1"].values()),
            "answered_share": result(day, "gate_volume")["answered_share"],
        }
        for name, value in figures.items():
            ranges.setdefault(name, []).append(value)
    with capsys.disabled():  # the clean ranges model.yaml's monitor thresholds cite
        print({name: (round(min(v), 4), round(max(v), 4)) for name, v in ranges.items()})


@pytest.mark.parametrize(
    "shift, task, alarm",
    [
        ("click-rate=0.5", "gate_online", ("online v1", "calibration")),
        ("app-share=0.2", "gate_drift", ("divergence v1", "app_id")),
        ("encoding=upper", "gate_drift", ("unseen v1", "os")),
    ],
)
def test_a_world_change_is_caught_on_its_first_day_by_the_metric_that_moved(live, shift, task, alarm, capsys):
    live_day(live, FIRST_DAY)
    assert set(monitor(FIRST_DAY).values()) == {0}  # the day before the change: clean

    changed = FIRST_DAY + dt.timedelta(days=1)
    live_day(live, changed, shift)
    codes = monitor(changed)
    assert codes[task] == 3, codes  # a failed gate's exit code
    assert alarm in failed(changed, task)
    assert codes["join_outcomes"] == 0
    out = capsys.readouterr().out
    assert f"{task} FAILED" in out and alarm[1] in out  # the gate table, in the task log
    with capsys.disabled():  # what the change did to the figures, for the record
        breached = [
            (o["suite"], o["column"], o["observed"]) for o in result(changed, task)["outcomes"] if not o["passed"]
        ]
        print(f"\n{shift}: {breached}")


def test_a_slow_decline_of_training_rows_is_caught_by_the_trend(run_home):
    """Ten daily runs whose training rows fall 3 % a day: each run's extract passed gate_raw's band (0.7..1.3 of
    the trailing median, which falls with them); the line through them falls 3 % a day, past 1.5 %."""
    registry = open_registry(settings().registry_url)
    v1 = registry.get("ctr", 1)
    first = dt.date.fromisoformat(v1.ds) + dt.timedelta(days=1)
    for n in range(10):
        day = (first + dt.timedelta(days=n)).isoformat()
        metrics = {**v1.metrics, "raw_rows": round(v1.metrics["raw_rows"] * 0.97 ** (n + 1))}
        registry.register(
            **{f.name: getattr(v1, f.name) for f in dataclasses.fields(v1) if f.name in REGISTERED},
            ds=day,
            window_end=day,
            window_start=day,
            metrics=metrics,
        )
    judged = first + dt.timedelta(days=9)
    layout = RunLayout(open_store(settings()), "ctr", judged.isoformat(), MONITOR_DAG)
    layout.write_result(
        JoinOutcomesResult(
            day=judged.isoformat(),
            online_uri="",
            online_sha256="",
            population=30_000,
            answered=30_000,
            outcomes=850,
            versions={"1": 30_000},
            bayes_optimal_logloss=None,
        )
    )
    assert run_step("gate_volume", judged.isoformat()) == 3
    volume = result(judged, "gate_volume")
    assert [column for _, column in failed(judged, "gate_volume")] == ["training_rows_daily_change"]
    assert volume["rows_daily_change"] == pytest.approx(-0.03, abs=0.003)
    assert len(volume["training_rows"]) == 10  # v1's run is the eleventh: outside the last ten


REGISTERED = (
    "model",
    "artifact_uri",
    "artifact_sha256",
    "code_version",
    "config_sha256",
    "features_sha256",
    "algorithm",
)
