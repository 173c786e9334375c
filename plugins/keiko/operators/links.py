"""The "Run page" button on every keiko task: the run's report (a monitor task's: the model's monitoring page),
served by the keiko Airflow plugin."""

from __future__ import annotations

from typing import Any

from airflow.sdk import BaseOperatorLink

RUN_PAGES_PREFIX = "/keiko"  # where keiko.airflow_plugin mounts keiko.run_pages on the API server


def run_page_url(model: str, ds: str) -> str:
    """The run page of `model` for day `ds` on this deployment's API server ([api] base_url)."""
    from airflow.configuration import conf

    base = (conf.get("api", "base_url", fallback="") or "http://localhost:8080").rstrip("/")
    return f"{base}{RUN_PAGES_PREFIX}/runs/{model}/{ds}/"


def monitoring_page_url(model: str) -> str:
    """The monitoring page of `model` (keiko.report.monitoring), served beside the run pages."""
    from airflow.configuration import conf

    base = (conf.get("api", "base_url", fallback="") or "http://localhost:8080").rstrip("/")
    return f"{base}{RUN_PAGES_PREFIX}/monitor/{model}/"


def page_url(model: str, ds: str, task_id: str) -> str:
    """The page a task's button opens: the monitoring page for a monitor step, else the run page."""
    from keiko.pipeline import MONITOR_DAG, STEPS

    step = STEPS.get(task_id)
    return monitoring_page_url(model) if step and step.dag == MONITOR_DAG else run_page_url(model, ds)


class RunPageLink(BaseOperatorLink):
    """Computed when the task ends (success or failure) and kept as XCom, as Airflow 3 does for all links."""

    name = "Run page"

    def get_link(self, operator: Any, *, ti_key: Any) -> str:
        return page_url(operator.model, operator.ds, operator.task_id)
