"""`keiko run`: the plan comes from keiko.pipeline, trigger rules decide as Airflow's do, and a run ends with
the first failed step's exit code and one-line reason. Steps here are a fake executor, or small processes."""

from __future__ import annotations

import datetime as dt
import os
import signal
import sys

import pytest

from conftest import DS
from keiko.cli import main
from keiko.config import settings
from keiko.contract import RunLayout
from keiko.errors import KeikoError
from keiko.local_run import (
    FAILED,
    SKIPPED,
    SUCCESS,
    UPSTREAM_FAILED,
    Finished,
    StepInterrupted,
    StepProcesses,
    not_run_state,
    run_pipeline,
    run_process,
    run_steps,
    steps_until,
)
from keiko.pipeline import ALL_DONE_MIN_ONE_SUCCESS, ALL_SUCCESS, ONE_FAILED, PIPELINE, TASK_IDS, upstream
from keiko.process import EXIT_GATE_FAILED, EXIT_INTERRUPTED, EXIT_SKIPPED, EXIT_USER_ERROR, RUN_ID_ENV, RUN_TYPE_ENV
from keiko.run_params import RUN_PARAMS_ENV
from keiko.runs import StepRecord, write_step
from keiko.storage import open_store

MAIN = tuple(step.task_id for step in PIPELINE if not step.on_failure_only)  # what a run that goes well runs


class FakeSteps:
    """Each step 'runs' by exiting with the code given for it (default 0), saying why when it is not 0."""

    def __init__(self, **exits: int) -> None:
        self.exits = exits
        self.ran: list[str] = []

    def __call__(self, step) -> Finished:
        self.ran.append(step.task_id)
        code = self.exits.get(step.task_id, 0)
        return Finished(code, f"{step.task_id} says why" if code else "")


def run_fake(fake: FakeSteps, until: str = TASK_IDS[-1]) -> tuple[int, list[str]]:
    lines: list[str] = []
    return run_pipeline(steps_until(until), fake, lines.append), lines


def test_a_whole_run_is_the_pipeline_in_order_each_step_after_its_upstream():
    assert steps_until(TASK_IDS[-1]) == PIPELINE
    for index, step in enumerate(PIPELINE):
        assert all(TASK_IDS.index(task) < index for task in upstream(step)), step.task_id


def test_until_runs_up_to_and_including_the_task():
    fake = FakeSteps()
    code, lines = run_fake(fake, until="gate_features")
    assert code == 0 and fake.ran == ["extract", "gate_raw", "features", "gate_features"]
    assert lines[-1].startswith("=== extract .. gate_features in ") and lines[-1].endswith(": 4 success")


def test_an_unknown_until_is_one_line_naming_the_tasks(capsys):
    with pytest.raises(KeikoError) as refused:
        steps_until("trian")
    assert str(refused.value) == f"--until trian: no such task; the tasks are {', '.join(TASK_IDS)}"
    assert main(["run", "--model", "ctr", "--ds", DS, "--until", "trian"]) == EXIT_USER_ERROR
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err.count("\n") == 1 and ", ".join(TASK_IDS) in captured.err


@pytest.mark.parametrize(
    ("conf", "message"),
    [("{nope", "--conf is not JSON"), ("[]", "--conf must be a JSON object"), ('{"window_day": 3}', "window_day")],
)
def test_bad_params_are_refused_before_any_step(conf, message, capsys):
    assert main(["run", "--model", "ctr", "--ds", DS, "--conf", conf]) == EXIT_USER_ERROR
    captured = capsys.readouterr()
    assert captured.out == "" and message in captured.err


@pytest.mark.parametrize(
    ("rule", "upstream_states", "decided"),
    [
        (ALL_SUCCESS, [], None),  # the first step
        (ALL_SUCCESS, [SUCCESS], None),
        (ALL_SUCCESS, [FAILED], UPSTREAM_FAILED),
        (ALL_SUCCESS, [UPSTREAM_FAILED], UPSTREAM_FAILED),
        (ALL_SUCCESS, [SKIPPED], SKIPPED),
        (ONE_FAILED, [FAILED], None),
        (ONE_FAILED, [UPSTREAM_FAILED], None),  # a failure further up cascades to rollback
        (ONE_FAILED, [SUCCESS], SKIPPED),
        (ONE_FAILED, [SKIPPED], SKIPPED),
        (ALL_DONE_MIN_ONE_SUCCESS, [FAILED, SUCCESS], None),  # register after a failed gate_evaluation
        (ALL_DONE_MIN_ONE_SUCCESS, [SUCCESS, SUCCESS], None),
        (ALL_DONE_MIN_ONE_SUCCESS, [UPSTREAM_FAILED, FAILED], UPSTREAM_FAILED),
        (ALL_DONE_MIN_ONE_SUCCESS, [SKIPPED, SUCCESS], SKIPPED),
    ],
)
def test_trigger_rules_decide_as_airflow_does(rule, upstream_states, decided):
    assert not_run_state(rule, upstream_states) == decided


def test_every_trigger_rule_of_the_pipeline_is_known_and_others_are_refused():
    for step in PIPELINE:
        not_run_state(step.trigger_rule, [SUCCESS])
    with pytest.raises(ValueError, match="none_skipped"):
        not_run_state("none_skipped", [SUCCESS])


def test_a_run_that_goes_well_runs_every_step_but_rollback():
    fake = FakeSteps()
    code, lines = run_fake(fake)
    assert code == 0 and fake.ran == list(MAIN)
    assert "=== rollback skipped: not run (trigger rule one_failed)" in lines
    assert lines[-1].endswith(f": {len(MAIN)} success, 1 skipped")


def test_a_failed_gate_stops_the_chain_and_its_reason_is_the_last_line():
    fake = FakeSteps(gate_raw=EXIT_GATE_FAILED, rollback=EXIT_SKIPPED)
    code, lines = run_fake(fake)
    # Everything after gate_raw is upstream_failed; rollback runs (one_failed) and finds nothing to undo.
    assert code == EXIT_GATE_FAILED and fake.ran == ["extract", "gate_raw", "rollback"]
    assert "=== gate_raw failed (exit 3) in " in "\n".join(lines)
    assert "=== features upstream_failed: not run (trigger rule all_success)" in lines
    assert "=== register upstream_failed: not run (trigger rule all_done_min_one_success)" in lines
    assert lines[-1] == "keiko: failed at gate_raw (exit 3): gate_raw says why"


def states(**exits: int) -> dict[str, str]:
    """Each task's state in a whole run whose steps exit as given."""
    return {outcome.task_id: outcome.state for outcome in run_steps(PIPELINE, FakeSteps(**exits), lambda _: None)}


def test_register_still_records_the_candidate_a_failed_gate_evaluation_judged():
    fake = FakeSteps(gate_evaluation=EXIT_GATE_FAILED, deploy=EXIT_SKIPPED)  # rejected: deploy skips
    code, lines = run_fake(fake)
    assert fake.ran == list(MAIN[: MAIN.index("deploy") + 1])
    after = states(**fake.exits)
    assert [after[task] for task in ("register", "deploy", "gate_serving", "rollback")] == [SUCCESS, *[SKIPPED] * 3]
    assert code == EXIT_GATE_FAILED
    assert lines[-1] == "keiko: failed at gate_evaluation (exit 3): gate_evaluation says why"


def test_a_failed_evaluate_leaves_register_nothing_to_record():
    assert states(evaluate=EXIT_USER_ERROR)["register"] == UPSTREAM_FAILED


def test_a_skipped_deploy_skips_what_needs_it_and_the_run_succeeds():
    fake = FakeSteps(deploy=EXIT_SKIPPED)
    code, lines = run_fake(fake)
    assert code == 0 and fake.ran == list(MAIN[: MAIN.index("deploy") + 1])
    assert "=== gate_serving skipped: not run (trigger rule all_success)" in lines


def test_rollback_runs_after_a_failed_gate_serving_whose_failure_stays_the_runs():
    fake = FakeSteps(gate_serving=EXIT_GATE_FAILED, rollback=EXIT_USER_ERROR)
    code, lines = run_fake(fake)
    assert fake.ran == [*MAIN[: MAIN.index("canary")], "rollback"]  # canary: upstream_failed, not run
    assert "=== rollback failed (exit 2) in " in "\n".join(lines)
    assert code == EXIT_GATE_FAILED and lines[-1] == "keiko: failed at gate_serving (exit 3): gate_serving says why"


def test_rollback_runs_after_a_failed_deploy_but_not_beyond_until():
    fake = FakeSteps(deploy=EXIT_USER_ERROR, rollback=EXIT_SKIPPED)
    assert run_fake(fake)[0] == EXIT_USER_ERROR and fake.ran[-2:] == ["deploy", "rollback"]
    fake = FakeSteps(gate_serving=EXIT_GATE_FAILED)
    assert run_fake(fake, until="gate_serving")[0] == EXIT_GATE_FAILED
    assert fake.ran == list(MAIN[: MAIN.index("gate_serving") + 1])


def test_an_interrupted_step_stops_the_run_with_130():
    def interrupted_at_train(step) -> Finished:
        if step.task_id == "train":
            raise StepInterrupted("train (SIGINT, forwarded to the step)")
        return Finished(0)

    lines: list[str] = []
    assert run_pipeline(PIPELINE, interrupted_at_train, lines.append) == EXIT_INTERRUPTED
    assert lines[-2:] == ["=== train started", "keiko: interrupted during train (SIGINT, forwarded to the step)"]


def child(code: str) -> list[str]:
    return [sys.executable, "-c", code]


def test_a_process_streams_its_output_but_the_result_line_and_ends_with_its_code():
    echoed: list[str] = []
    script = (
        "import sys; print('working'); print('keiko-result: {}'); print('keiko: why', file=sys.stderr); sys.exit(3)"
    )
    assert run_process(child(script), dict(os.environ), ".", echoed.append) == (3, "keiko: why")
    assert echoed == ["working", "keiko: why"]


def test_a_process_killed_by_a_signal_exits_128_plus_it():
    assert run_process(child("import os; os.kill(os.getpid(), 9)"), dict(os.environ), ".", print)[0] == 128 + 9


def test_ctrl_c_is_forwarded_to_the_step_and_the_run_stops():
    echoed: list[str] = []

    def echo(line: str) -> None:
        echoed.append(line)
        if line == "ready":  # the step runs: Ctrl-C reaches `keiko run` (its own process here)
            os.kill(os.getpid(), signal.SIGINT)

    before = signal.getsignal(signal.SIGINT)  # the default, or ignored (as in a pytest-xdist worker)
    script = "import time; print('ready', flush=True); time.sleep(60); print('finished')"
    with pytest.raises(StepInterrupted, match="SIGINT"):
        run_process(child(script), dict(os.environ), ".", echo)
    assert "finished" not in echoed and echoed[-1] == "KeyboardInterrupt"  # the step stopped, not ran out
    assert signal.getsignal(signal.SIGINT) is before  # and Ctrl-C is handled as before again


def test_a_step_runs_as_the_operator_runs_it(monkeypatch, tmp_path):
    from airflow.sdk import DAG

    from keiko.operators.stage import KeikoStageOperator

    monkeypatch.setenv("KEIKO_HOME", str(tmp_path))
    started = {}

    def fake_process(argv, env, cwd, echo):
        started.update(argv=list(argv), env=env, cwd=cwd)
        return 0, ""

    monkeypatch.setattr("keiko.local_run.run_process", fake_process)
    steps = StepProcesses("ctr", dt.date.fromisoformat(DS), "manual__t", '{"deploy": "skip"}', print)
    assert steps(PIPELINE[1]) == Finished(0)
    with DAG("t", schedule=None, start_date=dt.datetime(2026, 1, 1)):
        operator = KeikoStageOperator(task_id="gate_raw", model="ctr", stage="raw", kind="gate", ds=DS)
    assert started["argv"] == operator.command and started["cwd"] == str(settings().project_dir)
    env = started["env"]
    assert (env[RUN_ID_ENV], env[RUN_TYPE_ENV], env[RUN_PARAMS_ENV]) == ("manual__t", "manual", '{"deploy": "skip"}')


def test_the_reason_is_the_runs_step_record_else_the_last_line(monkeypatch, tmp_path):
    monkeypatch.setenv("KEIKO_HOME", str(tmp_path))
    monkeypatch.setattr("keiko.local_run.run_process", lambda *_args: (EXIT_GATE_FAILED, "keiko: the last line"))
    steps = StepProcesses("ctr", dt.date.fromisoformat(DS), "manual__this", "{}", print)
    gate_raw = PIPELINE[1]
    assert steps(gate_raw).reason == "keiko: the last line"  # nothing recorded

    def record(run_id: str) -> None:
        layout = RunLayout(open_store(settings()), "ctr", DS)
        write_step(layout, StepRecord("gate_raw", "failed", f"recorded by {run_id}", run_id, "", "", 1.0))

    record("manual__another")
    assert steps(gate_raw).reason == "keiko: the last line"  # an earlier run's record is not this run's reason
    record("manual__this")
    assert steps(gate_raw) == Finished(EXIT_GATE_FAILED, "recorded by manual__this")


def test_a_step_that_fails_before_recording_gives_its_own_last_line(monkeypatch, tmp_path):
    monkeypatch.setenv("KEIKO_HOME", str(tmp_path))
    finished = StepProcesses("nope", dt.date.fromisoformat(DS), "manual__t", "{}", lambda _line: None)(PIPELINE[0])
    assert finished.exit_code == EXIT_USER_ERROR and finished.reason.startswith("keiko: error: unknown model 'nope'")
