"""`make backfill`'s view of Airflow's backfill of a model DAG: each day's state and, for a day that waits for its
data, which partitions it waits for; and the backfill's cancellation (Ctrl-C, `make backfill-cancel`).

`python -m keiko.oncall.backfill progress|active|cancel --model M` reads, and to cancel writes, Airflow's metadata
database as `airflow backfill create` does: Airflow's CLI has no progress or cancel command, and its REST API needs
a login the script does not have. `cancel` does what the REST API's `PUT /backfills/{id}/cancel` does.
"""

from __future__ import annotations

import argparse
import collections
import sys
from collections.abc import Sequence
from typing import Any

from keiko.pipeline import DATA_WAIT


def _latest_backfill(session: Any, dag_id: str, active_only: bool = False) -> Any:
    from airflow.models.backfill import Backfill
    from sqlalchemy import select

    query = select(Backfill).where(Backfill.dag_id == dag_id)
    if active_only:
        query = query.where(Backfill.completed_at.is_(None))
    return session.scalars(query.order_by(Backfill.id.desc()).limit(1)).one_or_none()


def _runs(session: Any, backfill: Any) -> list[Any]:
    from airflow.models.dagrun import DagRun
    from sqlalchemy import select

    runs = session.scalars(select(DagRun).where(DagRun.backfill_id == backfill.id)).all()
    return sorted(runs, key=lambda run: run.logical_date)


def day_line(model: str, run: Any, states: dict[str, str]) -> str:
    """`2026-11-18 running: wait_for_data deferred, waiting for impressions/dt=2026-11-18 (1 of 16 missing)`."""
    ds = run.logical_date.date().isoformat()
    line = f"  {ds} {run.state}"
    if str(run.state) == "failed":
        failed = [task for task, state in states.items() if state == "failed"] or ["(no task failed)"]
        return f"{line}: failed at {failed[0]}: {_reason(model, ds, run.run_id, failed[0])}"
    from airflow.utils.state import State

    going = [(task, state) for task, state in states.items() if state in State.unfinished]
    if not going:
        return line
    parts = [f"{task} {state}" for task, state in going]
    if dict(going).get(DATA_WAIT) == "deferred":
        parts[[task for task, _ in going].index(DATA_WAIT)] += f", {_waiting(model, ds, run.conf or {})}"
    return f"{line}: {'; '.join(parts)}"


def _reason(model: str, ds: str, run_id: str, task: str) -> str:
    from keiko.alerts import step_reason

    return step_reason(model, ds, task, run_id) or "see the task's log (`keiko why` once a step has run)"


def _waiting(model: str, ds: str, conf: dict[str, Any]) -> str:
    from keiko.operators.sensors import waiting_for
    from keiko.warehouse import describe_partitions

    try:
        wait = waiting_for(model, ds, conf)
    except Exception as exc:  # progress is for reading: what could not be learned is said, not raised
        return f"waiting for its data ({type(exc).__name__}: {exc})"
    if not wait.missing:
        return "its data has landed"
    return f"waiting for {describe_partitions(wait.missing, 3)} ({len(wait.missing)} of {wait.partitions} missing)"


def progress(model: str) -> list[str]:
    """The summary line of the model DAG's latest backfill (`3/3 runs finished {'success': 3} done`), then a line
    per day."""
    from airflow.utils.session import create_session

    with create_session() as session:
        backfill = _latest_backfill(session, f"keiko_{model}")
        if backfill is None:
            return [f"no backfill of keiko_{model}"]
        runs = _runs(session, backfill)
        states = collections.Counter(str(run.state) for run in runs)
        done = states["success"] + states["failed"]
        summary = f"{done}/{len(runs)} runs finished {dict(states)} {'done' if backfill.completed_at else 'running'}"
        days = []
        for run in runs:
            tasks = {ti.task_id: str(ti.state) for ti in run.get_task_instances(session=session) if ti.state}
            days.append(day_line(model, run, tasks))
    return [summary, *days]


def active(model: str) -> list[str]:
    """Nothing when the DAG has no backfill in progress; else what it is and how to end it."""
    from airflow.utils.session import create_session

    with create_session() as session:
        backfill = _latest_backfill(session, f"keiko_{model}", active_only=True)
        if backfill is None:
            return []
        first, last = backfill.from_date.date(), backfill.to_date.date()
    return [
        f"backfill {backfill.id} of keiko_{model} ({first}..{last}) is still in progress, and a DAG takes one "
        f"backfill at a time. Wait for it, or cancel it: make backfill-cancel MODEL={model}",
        *progress(model)[1:],
    ]


def cancel(model: str) -> str:
    """Pause the DAG's backfill in progress, fail its queued runs and mark it complete (as the REST API does): the
    next backfill can start; runs already going finish on their own."""
    from airflow.models.backfill import BackfillDagRun
    from airflow.models.dagrun import DagRun
    from airflow.utils import timezone
    from airflow.utils.session import create_session
    from airflow.utils.state import DagRunState
    from sqlalchemy import select, update

    with create_session() as session:
        backfill = _latest_backfill(session, f"keiko_{model}", active_only=True)
        if backfill is None:
            return f"no backfill of keiko_{model} in progress"
        backfill.is_paused = True
        session.commit()  # first, so the scheduler starts no more of its runs
        queued = select(BackfillDagRun.dag_run_id).where(BackfillDagRun.backfill_id == backfill.id)
        session.execute(
            update(DagRun)
            .where(DagRun.id.in_(queued), DagRun.state == DagRunState.QUEUED)
            .values(state=DagRunState.FAILED)
            .execution_options(synchronize_session=False)
        )
        session.commit()
        backfill.completed_at = timezone.utcnow()
        running = [run.logical_date.date().isoformat() for run in _runs(session, backfill) if run.state == "running"]
        identifier = backfill.id
    going = f"; still running, to their end: {', '.join(running)}" if running else ""
    return f"cancelled backfill {identifier} of keiko_{model}: its queued days failed{going}"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m keiko.oncall.backfill", description=__doc__.split("\n\n")[0])
    parser.add_argument("command", choices=("progress", "active", "cancel"))
    parser.add_argument("--model", required=True)
    args = parser.parse_args(argv)
    from keiko.errors import KeikoError
    from keiko.modeldef import load_model

    try:
        load_model(args.model)
    except KeikoError as exc:
        print(f"backfill: {exc}", file=sys.stderr)
        return 2
    if args.command == "progress":
        print("\n".join(progress(args.model)))
    elif args.command == "active":
        lines = active(args.model)
        print("\n".join(lines), file=sys.stderr)
        return 1 if lines else 0
    else:
        print(cancel(args.model))
    return 0


if __name__ == "__main__":
    sys.exit(main())
