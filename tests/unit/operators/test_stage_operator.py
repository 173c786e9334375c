import datetime as dt
import sys

import pytest
from airflow.sdk import DAG
from airflow.sdk.exceptions import AirflowException, AirflowFailException, AirflowSkipException

from conftest import DS
from keiko.operators.stage import KeikoStageOperator


class ScriptedOperator(KeikoStageOperator):
    """The real operator with the stage replaced by a script, to exercise exit-code handling."""

    script = ""

    @property
    def command(self):
        return [sys.executable, "-c", self.script]


def make(cls=KeikoStageOperator, **kwargs):
    with DAG("t", schedule=None, start_date=dt.datetime(2026, 1, 1)):
        return cls(task_id="s", model="ctr", stage="extract", **kwargs)


def test_every_templated_field_renders():
    task = make(env={"KEIKO_NOTE": "run {{ ds }}"})
    assert set(task.template_fields) == {"model", "ds", "env"}
    task.render_template_fields({"ds": DS})
    assert (task.model, task.ds, task.env) == ("ctr", DS, {"KEIKO_NOTE": f"run {DS}"})
    assert task.command[-6:] == ["stage", "extract", "--model", "ctr", "--ds", DS]


def test_result_line_becomes_the_return_value():
    task = make(ScriptedOperator)
    task.script = "print('working'); print('keiko-result: {\"rows\": 3}')"
    assert task.execute({"run_id": "r"}) == {"rows": 3}


def test_exit_99_skips_the_task_with_the_reason():
    task = make(ScriptedOperator)
    task.script = "print('skipped: candidate worse than production'); raise SystemExit(99)"
    with pytest.raises(AirflowSkipException, match="candidate worse than production"):
        task.execute({"run_id": "r"})


def test_a_failing_stage_fails_the_task_with_its_last_line_and_a_user_error_is_not_retried(keiko_home):
    task = make(ds="2027-01-10")  # no data for that window: exit 2, the same on every try
    with pytest.raises(
        AirflowFailException, match=r"keiko stage extract failed \(exit 2\).*missing warehouse partitions"
    ):
        task.execute({"run_id": "r"})


@pytest.mark.parametrize(("code", "retried"), [(1, True), (75, True), (-9, True), (2, False), (3, False)], ids=str)
def test_only_infrastructure_failures_are_left_to_retries(code, retried):
    """Exit 1 (an unexpected exception), 75 (a server or lease that may recover) and a kill are retried; a user
    error (2) or failed expectations (3) fail the task on its first try."""
    task = make(ScriptedOperator)
    task.script = f"import os, signal; print('it ended'); os.kill(os.getpid(), 9) if {code} < 0 else exit({code})"
    with pytest.raises(AirflowException, match="it ended") as failed:
        task.execute({"run_id": "r"})
    assert isinstance(failed.value, AirflowFailException) is not retried


def test_a_conf_key_that_is_no_param_fails_the_task_at_once_without_retries():
    """Airflow validates declared params only: `window_day` (a typo) reaches the task, which must not retry it."""
    task = make(ScriptedOperator)
    task.script = "raise SystemExit('the stage must not start')"
    with pytest.raises(AirflowFailException, match="unknown run parameter window_day; known: deploy, deploy_strategy,"):
        task.execute({"run_id": "r", "params": {"deploy": "auto", "window_day": 5}})
