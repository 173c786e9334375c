"""approve_promotion asks a person only when the canary's result awaits a decision, with its evidence."""

import datetime as dt
from types import SimpleNamespace

import pytest
from airflow.providers.standard.operators.hitl import HITLOperator
from airflow.sdk.exceptions import AirflowSkipException

from keiko.operators.approval import PromotionApprovalOperator


def approval() -> PromotionApprovalOperator:
    return PromotionApprovalOperator(
        task_id="approve_promotion", model="ctr", canary_task_id="canary", response_timeout=dt.timedelta(hours=24)
    )


def context(canary_result):
    return {"ti": SimpleNamespace(xcom_pull=lambda task_ids: canary_result if task_ids == "canary" else None)}


@pytest.mark.parametrize("result", [None, {"state": "promoted"}, {"state": "reverted"}, {"state": "kept stable"}])
def test_no_person_is_asked_unless_the_canary_awaits_a_decision(result):
    with pytest.raises(AirflowSkipException, match="no decision needed"):
        approval().execute(context(result))


def test_the_person_sees_the_versions_and_the_evidence_and_nobody_answering_keeps_stable(monkeypatch):
    asked = {}
    monkeypatch.setattr(
        HITLOperator, "execute", lambda self, _context: asked.update(subject=self.subject, body=self.body)
    )
    task = approval()
    assert task.options == ["Promote", "Keep stable"] and task.defaults == ["Keep stable"]
    evidence = "canary of ctr v3 beside production v2: passed all 2 steps, but its margin is thin ..."
    task.execute(context({"state": "awaiting approval", "version": 3, "stable_version": 2, "approval": evidence}))
    assert asked == {"subject": "ctr: promote v3 over v2?", "body": evidence}
