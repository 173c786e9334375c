"""approve_promotion: Airflow's human-in-the-loop task for a canary or A/B promotion that needs a person.

A HITLOperator (standard provider, Airflow 3.1+) with keiko's two options, Promote and Keep stable, rather than
ApprovalOperator: a Reject there skips everything downstream, and a rejected canary must still be ended (promote
does it). It runs only when the canary task's result is `awaiting approval`: otherwise it skips itself, and promote
after it. Its subject names the versions; its body is the canary's evidence (why a person decides, the last
verdict's table or the A/B report). With no answer within model.yaml's deploy.approval_hours it takes Keep stable.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from airflow.providers.standard.operators.hitl import HITLOperator
from airflow.sdk.exceptions import AirflowSkipException

from keiko.process import APPROVAL_OPTIONS, KEEP_STABLE


class PromotionApprovalOperator(HITLOperator):
    """:param model: the model; :param canary_task_id: the task whose result may await approval."""

    def __init__(self, *, model: str, canary_task_id: str, response_timeout: dt.timedelta, **kwargs: Any) -> None:
        super().__init__(
            subject=f"{model}: promote the canary?",
            options=list(APPROVAL_OPTIONS),
            defaults=KEEP_STABLE,
            response_timeout=response_timeout,
            **kwargs,
        )
        self.model = model
        self.canary_task_id = canary_task_id

    def execute(self, context: Any) -> Any:
        result = context["ti"].xcom_pull(task_ids=self.canary_task_id) or {}
        if result.get("state") != "awaiting approval":
            raise AirflowSkipException(f"no decision needed: the canary is {result.get('state') or 'not run'}")
        self.subject = f"{self.model}: promote v{result['version']} over v{result['stable_version']}?"
        self.body = result["approval"]
        return super().execute(context)
