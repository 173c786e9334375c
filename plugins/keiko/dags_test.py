"""After `airflow dags test`: its runs start when their first task did, not at their logical date.

`airflow dags test` records its run as started at the logical date (apache/airflow#66127, open), so the grid
draws a demo run of minutes as days long ("10d 7h") and every real run's bar flat beside it. `make demo` and the
tests that use `airflow dags test` call this afterwards: `python -m keiko.dags_test`.
"""

from __future__ import annotations


def fix_start_dates() -> int:
    """Move each `airflow dags test` run's start to its first task's; how many were moved."""
    from airflow.models.dagrun import DagRun
    from airflow.models.taskinstance import TaskInstance
    from airflow.utils.session import create_session
    from sqlalchemy import func, select

    moved = 0
    with create_session() as session:
        for run in session.scalars(select(DagRun).where(DagRun.triggering_user_name == "dag_test")):
            first = session.scalar(
                select(func.min(TaskInstance.start_date)).where(
                    TaskInstance.dag_id == run.dag_id, TaskInstance.run_id == run.run_id
                )
            )
            if first is not None and run.start_date is not None and run.start_date < first:
                run.start_date = first
                moved += 1
    return moved


if __name__ == "__main__":
    print(f"{fix_start_dates()} `airflow dags test` run(s) now start when their first task did")
