"""`keiko run`: one model's run for one day on this machine, without Airflow, as its DAG would run it.

The steps and their rules come from keiko.pipeline, as the DAG's do. Each step, in pipeline order, runs or not
as its trigger rule decides on how the steps it runs after ended (Airflow's semantics, for the rules the
pipeline uses): a failure's downstream is upstream_failed and does not run, a skip skips what needs it,
register still records the candidate a failed gate_evaluation judged, and rollback runs only after a failure.
A step that runs is its own `keiko stage|gate` process, started as the local operator starts it (command line,
working directory, own session, stderr merged into stdout) with the environment it gives a manual run, so its
exit code and result line are the real ones (keiko.process).

The run's exit code is the first failed step's, and its last line that step's one-line reason.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import cached_property

from keiko.config import settings
from keiko.contract import RunLayout
from keiko.errors import KeikoError
from keiko.modeldef import load_model
from keiko.pipeline import (
    ALL_DONE_MIN_ONE_SUCCESS,
    ALL_SUCCESS,
    MODEL_DAG,
    MONITOR_DAG,
    NONE_FAILED_MIN_ONE_SUCCESS,
    ONE_FAILED,
    REPEATED,
    Step,
    steps_of,
    upstream,
)
from keiko.process import (
    EXIT_INTERRUPTED,
    EXIT_SKIPPED,
    RESULT_PREFIX,
    RUN_ID_ENV,
    RUN_TYPE_ENV,
    next_call_seconds,
    step_arguments,
)
from keiko.run_params import RUN_PARAMS_ENV, RunParams
from keiko.runs import read_step
from keiko.storage import open_store

# Airflow's task states, as far as a run without retries reaches them.
SUCCESS, FAILED, SKIPPED, UPSTREAM_FAILED = "success", "failed", "skipped", "upstream_failed"
STATES = (SUCCESS, FAILED, SKIPPED, UPSTREAM_FAILED)
RUN_TYPE = "manual"  # Airflow's run type of a run started by hand
FORWARDED_SIGNALS = (signal.SIGINT, signal.SIGTERM)

Say = Callable[[str], None]


def say_line(line: str) -> None:
    print(line, flush=True)


def not_run_state(trigger_rule: str, upstream_states: Sequence[str]) -> str | None:
    """What Airflow makes of a task whose upstream tasks ended in `upstream_states`: None, it runs; else the
    state it gets without running. Airflow's TriggerRuleDep (airflow/ti_deps/deps/trigger_rule_dep.py) for the
    rules keiko.pipeline uses; any other rule is refused rather than guessed."""
    failed = FAILED in upstream_states or UPSTREAM_FAILED in upstream_states
    skipped = SKIPPED in upstream_states
    if trigger_rule == ALL_SUCCESS:
        return UPSTREAM_FAILED if failed else SKIPPED if skipped else None
    if trigger_rule == ONE_FAILED:
        return None if failed else SKIPPED
    if trigger_rule == NONE_FAILED_MIN_ONE_SUCCESS:
        return UPSTREAM_FAILED if failed else None if SUCCESS in upstream_states else SKIPPED
    if trigger_rule == ALL_DONE_MIN_ONE_SUCCESS:
        # Airflow does not count a skipped upstream as done for this rule: one skip skips the task.
        return SKIPPED if skipped else None if SUCCESS in upstream_states else UPSTREAM_FAILED
    raise ValueError(f"keiko run does not implement the trigger rule {trigger_rule!r}: add it to not_run_state")


def steps_until(task_id: str, dag: str = MODEL_DAG) -> tuple[Step, ...]:
    """The steps of a run (of the monitor's, with dag=MONITOR_DAG) up to and including `task_id`, in order
    (each after its upstream steps)."""
    chain = steps_of(dag)
    task_ids = [step.task_id for step in chain]
    if task_id not in task_ids:
        raise KeikoError(f"--until {task_id}: no such task; the tasks are {', '.join(task_ids)}")
    return chain[: task_ids.index(task_id) + 1]


@dataclass(frozen=True)
class Finished:
    """How a step's process ended."""

    exit_code: int
    reason: str = ""  # one line: why it failed or skipped; empty after a success


@dataclass(frozen=True)
class Outcome:
    task_id: str
    state: str  # one of STATES
    exit_code: int | None = None  # None: not run (skipped or upstream_failed by its trigger rule)
    reason: str = ""


Execute = Callable[[Step], Finished]


def state_of(exit_code: int) -> str:
    """A step's state from its process's exit code, as the operators read it (keiko.process)."""
    return SUCCESS if exit_code == 0 else SKIPPED if exit_code == EXIT_SKIPPED else FAILED


def run_steps(steps: Sequence[Step], execute: Execute, say: Say) -> list[Outcome]:
    """Each step in order, run by `execute` or not as its trigger rule decides; a line as each starts and ends."""
    states: dict[str, str] = {}
    outcomes = []
    for step in steps:
        decided = not_run_state(step.trigger_rule, [states[task] for task in upstream(step)])
        if decided is not None:
            say(f"=== {step.task_id} {decided}: not run (trigger rule {step.trigger_rule})")
            outcome = Outcome(step.task_id, decided)
        else:
            say(f"=== {step.task_id} started")
            started = time.monotonic()
            finished = execute(step)
            outcome = Outcome(step.task_id, state_of(finished.exit_code), finished.exit_code, finished.reason)
            exit_note = f" (exit {finished.exit_code})" if outcome.state == FAILED else ""
            say(f"=== {step.task_id} {outcome.state}{exit_note} in {time.monotonic() - started:.1f}s")
        states[step.task_id] = outcome.state
        outcomes.append(outcome)
    return outcomes


def run_pipeline(steps: Sequence[Step], execute: Execute, say: Say = say_line) -> int:
    """Run `steps`; the exit code of the first step that failed (0 if none did, 130 when interrupted), whose
    one-line reason is then the last line said."""
    started = time.monotonic()
    try:
        outcomes = run_steps(steps, execute, say)
    except KeyboardInterrupt as exc:
        say(f"keiko: interrupted{f' during {exc}' if str(exc) else ''}")
        return EXIT_INTERRUPTED
    counts = Counter(outcome.state for outcome in outcomes)
    tally = ", ".join(f"{counts[state]} {state}" for state in STATES if counts[state])
    say(f"=== {steps[0].task_id} .. {steps[-1].task_id} in {time.monotonic() - started:.1f}s: {tally}")
    failed = next((outcome for outcome in outcomes if outcome.state == FAILED), None)
    if failed is None:
        return 0
    say(f"keiko: failed at {failed.task_id} (exit {failed.exit_code}): {failed.reason}")
    return failed.exit_code or 1  # never 0 or None for a failed step: for the type checker


class StepInterrupted(KeyboardInterrupt):
    """SIGINT or SIGTERM reached `keiko run` while a step ran: forwarded to the step, and the run stops."""


def run_process(argv: Sequence[str], env: dict[str, str], cwd: str, echo: Say) -> tuple[int, str]:
    """Run `argv` as Airflow's SubprocessHook does (own session, stderr into stdout), echoing each output line
    but the result line (the operator's XCom, one long JSON line, also in the step's result file); (its exit
    code, its last non-empty line). SIGINT and SIGTERM are forwarded to its process group, and StepInterrupted
    raised once it has ended."""
    received: list[tuple[signal.Signals, bool]] = []  # each signal, and whether the handler forwarded it
    child: subprocess.Popen[bytes] | None = None

    def forward(signum: int, _frame: object) -> None:
        received.append((signal.Signals(signum), child is not None))
        if child is not None:
            with contextlib.suppress(ProcessLookupError):  # it has just ended
                os.killpg(child.pid, signum)

    # Installed before the child starts, so that no signal falls between its start and the handlers.
    previous = {signum: signal.signal(signum, forward) for signum in FORWARDED_SIGNALS}
    try:
        child = subprocess.Popen(
            argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, cwd=cwd, env=env, start_new_session=True
        )
        for signum, forwarded in list(received):  # arrived while it was starting
            if not forwarded:
                os.killpg(child.pid, signum)
        last = ""
        assert child.stdout is not None
        with child.stdout:
            for raw in iter(child.stdout.readline, b""):
                line = raw.decode(errors="backslashreplace").rstrip("\r\n")
                if not line.startswith(RESULT_PREFIX):
                    echo(line)
                last = line.strip() or last
        exit_code = child.wait()
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    if received:
        raise StepInterrupted(received[0][0].name)
    return (128 - exit_code if exit_code < 0 else exit_code), last  # killed by signal N: 128 + N, as a shell says


class StepProcesses:
    """Runs a step as KeikoStageOperator does: `python -m keiko stage|gate <name> --model M --ds D` in the
    project directory, with the run's id, type (manual) and params in its environment."""

    def __init__(self, model: str, ds: dt.date, run_id: str, params: str, say: Say, dag: str = MODEL_DAG) -> None:
        self.model, self.ds, self.run_id, self.say, self.dag = model, ds.isoformat(), run_id, say, dag
        self.cwd = str(settings().project_dir)
        # PYTHONUNBUFFERED: the step's stdout and stderr reach the pipe in the order it wrote them, as it writes.
        self.env = {
            **os.environ,
            RUN_ID_ENV: run_id,
            RUN_TYPE_ENV: RUN_TYPE,
            RUN_PARAMS_ENV: params,
            "PYTHONUNBUFFERED": "1",
        }

    def __call__(self, step: Step) -> Finished:
        """The step's process; a repeated step's (the canary's) again while its result says `running`, sleeping as
        Airflow defers in between."""
        argv = [sys.executable, "-m", "keiko", *step_arguments(step.kind, step.name, self.model, self.ds)]
        while True:
            try:
                exit_code, last_line = run_process(argv, self.env, self.cwd, self.say)
                wait = next_call_seconds(self.result(step)) if exit_code == 0 and step.task_id in REPEATED else None
                if wait is None:
                    break
                self.say(f"=== {step.task_id} still running: next call in {wait:g}s")
                time.sleep(wait)
            except (StepInterrupted, KeyboardInterrupt) as exc:
                raise StepInterrupted(f"{step.task_id} ({exc}, forwarded to the step)") from None
        return Finished(exit_code, "" if exit_code == 0 else self.reason(step.task_id, exit_code, last_line))

    def result(self, step: Step) -> dict | None:
        uri = self.layout.step_result(step.task_id)
        return self.layout.store.read_json(uri) if self.layout.store.exists(uri) else None

    def reason(self, task_id: str, exit_code: int, last_line: str) -> str:
        """The one line the step recorded in this run (keiko.runs), else its output's last line: a process that
        died, or failed before it could record anything (an unknown model), records nothing of this run."""
        try:
            record = read_step(self.layout, task_id)
        except Exception as exc:  # the record is the better reason, not a reason to lose the step's own line
            self.say(f"=== {task_id}: its step record could not be read ({type(exc).__name__}: {exc})")
            record = None
        if record is not None and record.run_id == self.run_id and record.outcome != SUCCESS:
            return record.message
        return last_line or f"exited {exit_code} without output"

    @cached_property
    def layout(self) -> RunLayout:
        return RunLayout(open_store(settings()), self.model, self.ds, self.dag)


def checked_params(model: str, conf: str) -> str:
    """--conf (the run's params, as `airflow dags test -c` takes them) checked once here, as Airflow checks a
    trigger's, rather than failing in the first step; what the steps get in KEIKO_RUN_PARAMS."""
    try:
        values = json.loads(conf)
    except json.JSONDecodeError as exc:
        raise KeikoError(f"--conf is not JSON ({exc}): {conf[:80]!r}") from None
    if not isinstance(values, dict):
        raise KeikoError(f"--conf must be a JSON object, got {conf[:80]!r}")
    RunParams.parse(values, load_model(model).config)  # an unknown model, param or value: one line, before any step
    return json.dumps(values)


def run(
    model: str, ds: dt.date, until: str | None = None, conf: str = "{}", say: Say = say_line, dag: str = MODEL_DAG
) -> int:
    """`keiko run`: the steps of `model`'s run for `ds` (or of its monitor's, judging day `ds`, with
    dag=MONITOR_DAG) up to and including `until` (default: all); its exit code."""
    steps = steps_until(until or steps_of(dag)[-1].task_id, dag)
    params = checked_params(model, conf)
    run_id = f"{RUN_TYPE}__{dt.datetime.now(dt.UTC).isoformat()}"
    what = "monitor of" if dag == MONITOR_DAG else "run"
    say(f"=== keiko {what} {model} {ds}: {steps[0].task_id} .. {steps[-1].task_id}, run {run_id}")
    return run_pipeline(steps, StepProcesses(model, ds, run_id, params, say, dag), say)
