"""Failure alerts: one compact message per failed task and per failed run, posted to a webhook.

The webhook is the Airflow HTTP connection KEIKO_ALERT_CONN_ID (default `keiko_alerts`; its host is
the full URL, e.g. a Slack incoming webhook). While that connection does not exist alerts are off and
the log says so. Posting is best effort: a dead webhook is logged and never changes a task's outcome.
"""

from __future__ import annotations

import datetime as dt
import logging
from dataclasses import asdict, dataclass
from typing import Any

from keiko.config import settings
from keiko.pipeline import MODEL_DAG, MONITOR_DAG

MONITOR_DAG_PREFIX = f"keiko_{MONITOR_DAG}_"

log = logging.getLogger(__name__)
POST_TIMEOUT_SECONDS = 10


@dataclass(frozen=True)
class Alert:
    kind: str  # "task failed" (a task's last try), "run failed" (the DAG run) or "run late" (its deadline passed)
    model: str
    ds: str
    task: str
    reason: str  # one line
    run_id: str
    run_page: str

    @property
    def text(self) -> str:
        return f"keiko {self.model} {self.ds}: {self.kind} at {self.task}: {self.reason} | {self.run_page}"

    def payload(self) -> dict[str, Any]:
        """`text` for chat webhooks (Slack, Teams, Mattermost), the fields for anything else."""
        return {"text": self.text, **asdict(self)}


def step_reason(model: str, ds: str, task: str, run_id: str, dag: str = MODEL_DAG) -> str | None:
    """The failed step's own one-line message from the run record, if this run recorded one."""
    from keiko.runs import RunRecord
    from keiko.storage import open_store

    try:
        run = RunRecord.load(open_store(settings()), model, ds, dag)
    except Exception:  # an unreachable store must not cost the alert
        log.exception("keiko alert: could not read the run record of %s %s", model, ds)
        return None
    step = run.steps.get(task) if run and run.run_id == run_id else None
    return step.message if step and step.outcome == "failed" else None


def _alert(kind: str, context: dict[str, Any], task: str, fallback_reason: str) -> Alert:
    from keiko.operators.links import monitoring_page_url, run_page_url
    from keiko.runs import one_line

    dag_id = context["dag"].dag_id
    run_id = str(context.get("run_id") or "")
    ds = str(context.get("ds") or "unknown day")
    if dag_id.startswith(MONITOR_DAG_PREFIX):  # a monitor run judges an earlier day than its own (its tasks' ds)
        from keiko.modeldef import load_model

        dag, model = MONITOR_DAG, dag_id.removeprefix(MONITOR_DAG_PREFIX)
        if context.get("ds"):
            lag = load_model(model).config.monitor_lag_days
            ds = (dt.date.fromisoformat(ds) - dt.timedelta(days=lag)).isoformat()
        page = monitoring_page_url(model)
    else:
        dag, model = MODEL_DAG, dag_id.removeprefix("keiko_")
        page = run_page_url(model, ds)
    reason = step_reason(model, ds, task, run_id, dag) if context.get("ds") else None
    return Alert(kind, model, ds, task, one_line(reason or fallback_reason), run_id, page)


def task_failure_alert(context: dict[str, Any]) -> Alert:
    ti = context["ti"]
    exception = context.get("exception")
    return _alert("task failed", context, ti.task_id, str(exception) if exception else "failed, see the task log")


def run_failure_alert(context: dict[str, Any]) -> Alert:
    ti = context.get("ti")  # the run's last task instance, when Airflow knows it
    task = ti.task_id if ti is not None else "unknown task"
    return _alert("run failed", context, task, f"the run failed ({context.get('reason') or 'no reason given'})")


def post(alert: Alert, conn_id: str | None = None) -> bool:
    """Post `alert` to the webhook connection; False (and a log line) when it is not configured or fails."""
    from airflow.providers.http.hooks.http import HttpHook
    from airflow.sdk import BaseHook

    conn_id = conn_id or settings().alert_conn_id
    try:
        BaseHook.get_connection(conn_id)
    except Exception:  # AirflowNotFoundException, across Airflow versions
        log.warning("keiko alert not sent (no Airflow connection %r): %s", conn_id, alert.text)
        return False
    try:
        HttpHook(method="POST", http_conn_id=conn_id).run(
            json=alert.payload(), extra_options={"timeout": POST_TIMEOUT_SECONDS}
        )
    except Exception:
        log.exception("keiko alert could not be posted to %r: %s", conn_id, alert.text)
        return False
    log.info("keiko alert posted to %r: %s", conn_id, alert.text)
    return True


def on_task_failure(context: dict[str, Any]) -> None:
    """Task-level on_failure_callback: runs after a task's last try fails (not on retries)."""
    post(task_failure_alert(context))


def on_run_failure(context: dict[str, Any]) -> None:
    """DAG-level on_failure_callback: runs in the DAG processor when a run ends failed."""
    post(run_failure_alert(context))


def deadline_alert(model: str, context: dict[str, Any]) -> Alert:
    """The DeadlineAlert's context is the run as the REST API returns it (`dag_run`) and the deadline."""
    from keiko.modeldef import load_model
    from keiko.operators.links import run_page_url

    run = context.get("dag_run") or {}
    ds = str(run.get("logical_date") or "")[:10] or "unknown day"
    hours = load_model(model).config.run.deadline_hours
    reason = (
        f"not finished {hours:g} h after it was queued ({run.get('queued_at') or 'unknown'}; model.yaml "
        f"run.deadline_hours), still {run.get('state') or 'unknown'}: see which task holds it in the grid"
    )
    return Alert("run late", model, ds, "the run", reason, str(run.get("dag_run_id") or ""), run_page_url(model, ds))


async def on_deadline_missed(model: str, context: dict[str, Any]) -> None:
    """The model DAG's DeadlineAlert callback; it runs in the triggerer, so the blocking post goes through
    asgiref's sync_to_async, as Airflow asks of triggers."""
    from asgiref.sync import sync_to_async

    await sync_to_async(post)(deadline_alert(model, context))
