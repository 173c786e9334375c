import asyncio
import json
from types import SimpleNamespace

import pytest

from conftest import DS, run_step, webhook_receiver
from keiko import alerts
from keiko.process import EXIT_GATE_FAILED


def failure_context(task_id: str, exception: Exception | None = None, run_id: str = "") -> dict:
    return {
        "dag": SimpleNamespace(dag_id="keiko_ctr"),
        "ti": SimpleNamespace(task_id=task_id),
        "ds": DS,
        "run_id": run_id,
        "exception": exception,
        "reason": "task_failure",
    }


def test_a_task_alert_names_model_day_task_and_gives_the_steps_one_line_reason(run_home, monkeypatch, project_copy):
    path = project_copy / "include" / "models" / "ctr" / "model.yaml"
    path.write_text(path.read_text().replace("min_auc: 0.65", "min_auc: 0.99"))
    monkeypatch.setenv("KEIKO_RUN_ID", "manual__drill")
    assert run_step("gate_evaluation") == EXIT_GATE_FAILED

    exception = RuntimeError("keiko gate evaluation failed (exit 3): ...\nmany lines")
    alert = alerts.task_failure_alert(failure_context("gate_evaluation", exception, "manual__drill"))
    assert (alert.kind, alert.model, alert.ds, alert.task) == ("task failed", "ctr", DS, "gate_evaluation")
    assert alert.reason.startswith("gate_evaluation failed") and "auc" in alert.reason
    assert alert.run_page == f"http://localhost:8080/keiko/runs/ctr/{DS}/"
    assert alert.text == f"keiko ctr {DS}: task failed at gate_evaluation: {alert.reason} | {alert.run_page}"

    # Another run's record is not this run's reason: the exception's own words, on one line.
    other = alerts.task_failure_alert(failure_context("gate_evaluation", exception, "scheduled__other"))
    assert other.reason == "keiko gate evaluation failed (exit 3): ... many lines"


def test_a_run_alert_without_a_task_still_says_what_happened(keiko_home):
    context = {"dag": SimpleNamespace(dag_id="keiko_cvr"), "run_id": "manual__x", "reason": "timed_out"}
    alert = alerts.run_failure_alert(context)
    assert (alert.kind, alert.model, alert.task) == ("run failed", "cvr", "unknown task")
    assert alert.reason == "the run failed (timed_out)"


@pytest.fixture
def webhook():
    with webhook_receiver() as receiver:
        yield receiver


def test_the_alert_is_posted_to_the_webhook_connection(keiko_home, monkeypatch, webhook):
    url, received = webhook
    monkeypatch.setenv("AIRFLOW_CONN_KEIKO_ALERTS", json.dumps({"conn_type": "http", "host": url}))
    alert = alerts.Alert("task failed", "ctr", DS, "extract", "no partition", "manual__1", "http://x/")
    assert alerts.post(alert)
    assert received == [alert.payload()]
    assert received[0]["text"] == alert.text


def test_without_the_connection_alerts_are_off_and_say_so(keiko_home, monkeypatch, caplog):
    monkeypatch.delenv("AIRFLOW_CONN_KEIKO_ALERTS", raising=False)
    alert = alerts.Alert("run failed", "ctr", DS, "train", "OOM", "manual__1", "http://x/")
    assert not alerts.post(alert)
    assert "keiko alert not sent (no Airflow connection 'keiko_alerts')" in caplog.text


def test_a_dead_webhook_is_logged_not_raised(keiko_home, monkeypatch, caplog):
    from conftest import free_port

    dead = f"http://127.0.0.1:{free_port()}/"
    monkeypatch.setenv("AIRFLOW_CONN_KEIKO_ALERTS", json.dumps({"conn_type": "http", "host": dead}))
    assert not alerts.post(alerts.Alert("run failed", "ctr", DS, "train", "OOM", "r", "http://x/"))
    assert "keiko alert could not be posted to 'keiko_alerts'" in caplog.text


def test_a_monitor_alert_names_the_judged_day_and_links_the_monitoring_page(keiko_home):
    # keiko_monitor_cvr's run for 2026-11-25 judges 2026-11-22 (conversions come within 72 h).
    context = {
        "dag": SimpleNamespace(dag_id="keiko_monitor_cvr"),
        "ti": SimpleNamespace(task_id="gate_online"),
        "ds": "2026-11-25",
        "run_id": "scheduled__x",
        "exception": RuntimeError("keiko gate online failed (exit 3)"),
    }
    alert = alerts.task_failure_alert(context)
    assert (alert.model, alert.ds, alert.task) == ("cvr", "2026-11-22", "gate_online")
    assert alert.run_page == "http://localhost:8080/keiko/monitor/cvr/"


def test_a_late_run_is_posted_from_the_deadline_callback(keiko_home, monkeypatch, webhook):
    """Airflow's DeadlineAlert calls it in the triggerer with the run as the REST API returns it."""
    url, received = webhook
    monkeypatch.setenv("AIRFLOW_CONN_KEIKO_ALERTS", json.dumps({"conn_type": "http", "host": url}))
    context = {
        "dag_run": {
            "dag_run_id": "scheduled__2026-11-21T02:00:00+00:00",
            "logical_date": "2026-11-21T02:00:00Z",
            "queued_at": "2026-11-22T02:00:04Z",
            "state": "running",
        },
        "deadline": {"id": "d", "deadline_time": "2026-11-22T12:00:04Z"},
    }
    asyncio.run(alerts.on_deadline_missed(model="ctr", context=context))
    (message,) = received
    assert (message["kind"], message["model"], message["ds"]) == ("run late", "ctr", DS)
    assert message["run_id"] == "scheduled__2026-11-21T02:00:00+00:00"
    assert message["reason"].startswith(
        "not finished 10 h after it was queued (2026-11-22T02:00:04Z; model.yaml run.deadline_hours), still running"
    )
    assert message["run_page"].endswith(f"/keiko/runs/ctr/{DS}/")
