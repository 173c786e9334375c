"""The record of a model run, kept in the artifact store: which steps ran and how each one ended.

Every `keiko stage|gate` command writes `{model}/{ds}/steps/<task id>.json` as it ends (success, failed
or skipped, with a one-line message). The run page, `keiko why`, `keiko status` and the failure alerts
read runs from here rather than from Airflow's database, so they work alike for local processes, pods
and commands run by hand.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from keiko.contract import ModelLayout, RunLayout
from keiko.pipeline import DATA_WAIT, MODEL_DAG, PIPELINE, steps_of
from keiko.storage import ArtifactStore

OUTCOMES = ("success", "failed", "skipped", "retrying")  # retrying: failed, and Airflow tries it again
# The steps every run that goes well reaches; the others run only after a failure (rollback).
MAIN_TASK_IDS = tuple(step.task_id for step in PIPELINE if not (step.on_failure_only or step.optional))


def one_line(text: str, limit: int = 300) -> str:
    """A message as one line of at most `limit` characters (alerts and tables stay readable)."""
    line = " ".join(str(text).split())
    return line if len(line) <= limit else line[: limit - 3] + "..."


@dataclass(frozen=True)
class StepRecord:
    task_id: str
    outcome: str  # one of OUTCOMES
    message: str  # one line: the result, the skip's reason or the error
    run_id: str
    started_at: str  # ISO 8601, UTC
    finished_at: str
    seconds: float
    trigger: dict[str, Any] = field(default_factory=dict)  # how the run was asked for (StageContext.trigger)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def write_step(layout: RunLayout, record: StepRecord) -> None:
    layout.store.write_json(layout.step_record(record.task_id), record.to_dict())


def read_step(layout: RunLayout, task_id: str) -> StepRecord | None:
    """The record the step `task_id` last wrote for this model and day (any run's), or None."""
    uri = layout.step_record(task_id)
    return StepRecord(**layout.store.read_json(uri)) if layout.store.exists(uri) else None


@dataclass(frozen=True)
class RunRecord:
    """The latest run of a model for one day: the steps written by its run id, in pipeline order.

    A rerun of the same day overwrites the steps it reaches; steps left over from an earlier run
    (another run id) are not part of this run and are ignored.
    """

    model: str
    ds: str
    run_id: str
    steps: dict[str, StepRecord]

    @classmethod
    def load(cls, store: ArtifactStore, model: str, ds: str, dag: str = MODEL_DAG) -> RunRecord | None:
        """None when no step of that model and day has ever run (of its monitor run, with dag=MONITOR_DAG)."""
        layout = RunLayout(store, model, ds, dag)
        task_ids = [*([DATA_WAIT] if dag == MODEL_DAG else []), *(step.task_id for step in steps_of(dag))]
        records = [StepRecord(**store.read_json(uri)) for uri in store.glob(layout.step_records)]
        records = [r for r in records if r.task_id in task_ids]
        if not records:
            return None
        latest = max(records, key=lambda r: r.finished_at)
        steps = {r.task_id: r for r in records if r.run_id == latest.run_id}
        return cls(model, ds, latest.run_id, {t: steps[t] for t in task_ids if t in steps})

    @property
    def failed(self) -> StepRecord | None:
        return next((s for s in self.steps.values() if s.outcome == "failed"), None)

    @property
    def retrying(self) -> StepRecord | None:
        return next((s for s in self.steps.values() if s.outcome == "retrying"), None)

    @property
    def last_step(self) -> StepRecord:
        """The furthest step of the pipeline the run recorded."""
        return list(self.steps.values())[-1]

    @property
    def outcome(self) -> str:
        """failed; retrying (a step failed and Airflow tries it again); complete (every step a good run reaches
        ended, or the last one recorded was skipped: Airflow skips the tasks after it without running them, so they
        record nothing); or incomplete (running, or stopped)."""
        if self.failed:
            return "failed"
        if self.retrying:
            return "retrying"
        if set(MAIN_TASK_IDS) <= set(self.steps) or self.last_step.outcome == "skipped":
            return "complete"
        return "incomplete"

    @property
    def trigger(self) -> dict[str, Any]:
        return self.last_step.trigger

    @property
    def finished_at(self) -> str:
        return max(s.finished_at for s in self.steps.values())


def latest_run(store: ArtifactStore, model: str) -> RunRecord | None:
    """The run whose last step ended most recently (a backfill of old days is not the latest run
    unless it ran last)."""
    days = ModelLayout(store, model).run_days()
    runs = [run for day in days if (run := RunRecord.load(store, model, day))]
    return max(runs, key=lambda run: run.finished_at, default=None)
