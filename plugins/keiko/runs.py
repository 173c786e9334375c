"""The record of a model run, kept in the artifact store: which steps ran and how each one ended.

Every `keiko stage|gate` command writes `{model}/{ds}/steps/<task id>.json` as it ends (success, failed
or skipped, with a one-line message). The run page, `keiko why`, `keiko status` and the failure alerts
read runs from here rather than from Airflow's database, so they work alike for local processes, pods
and commands run by hand.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import asdict, dataclass, field
from typing import Any

from keiko.pipeline import TASK_IDS
from keiko.storage import ArtifactStore

OUTCOMES = ("success", "failed", "skipped")
REPORT = "report.html"  # the run page, beside the steps: keiko.report draws it, keiko.run_pages serves it


def one_line(text: str, limit: int = 300) -> str:
    """A message as one line of at most `limit` characters (alerts and tables stay readable)."""
    line = " ".join(str(text).split())
    return line if len(line) <= limit else line[: limit - 3] + "..."


def task_id(kind: str, name: str) -> str:
    """The Airflow task id of `keiko <kind> <name>`: stages keep their name, gates get `gate_`."""
    return name if kind == "stage" else f"gate_{name}"


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


def step_uri(store: ArtifactStore, model: str, ds: str, task: str) -> str:
    return store.uri(model, ds, f"steps/{task}.json")


def write_step(store: ArtifactStore, model: str, ds: str, record: StepRecord) -> None:
    store.write_json(step_uri(store, model, ds, record.task_id), record.to_dict())


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
    def load(cls, store: ArtifactStore, model: str, ds: str) -> RunRecord | None:
        """None when no step of that model and day has ever run."""
        records = [StepRecord(**store.read_json(uri)) for uri in store.glob(store.uri(model, ds, "steps/*.json"))]
        records = [r for r in records if r.task_id in TASK_IDS]
        if not records:
            return None
        latest = max(records, key=lambda r: r.finished_at)
        steps = {r.task_id: r for r in records if r.run_id == latest.run_id}
        return cls(model, ds, latest.run_id, {t: steps[t] for t in TASK_IDS if t in steps})

    @property
    def failed(self) -> StepRecord | None:
        return next((s for s in self.steps.values() if s.outcome == "failed"), None)

    @property
    def last_step(self) -> StepRecord:
        """The furthest step of the pipeline the run recorded."""
        return list(self.steps.values())[-1]

    @property
    def outcome(self) -> str:
        """failed; complete (every step ended, or the last one recorded was skipped: Airflow skips the tasks
        after it without running them, so they record nothing); or incomplete (running, or stopped)."""
        if self.failed:
            return "failed"
        if len(self.steps) == len(TASK_IDS) or self.last_step.outcome == "skipped":
            return "complete"
        return "incomplete"

    @property
    def trigger(self) -> dict[str, Any]:
        return self.last_step.trigger

    @property
    def finished_at(self) -> str:
        return max(s.finished_at for s in self.steps.values())


def run_days(store: ArtifactStore, model: str) -> list[str]:
    """Days with at least one recorded step, oldest first."""
    days = {uri.rsplit("/", 3)[-3] for uri in store.glob(f"{store.root_uri}/{model}/*/steps/*.json")}
    return sorted(day for day in days if _is_day(day))


def latest_run(store: ArtifactStore, model: str) -> RunRecord | None:
    """The run whose last step ended most recently (a backfill of old days is not the latest run
    unless it ran last)."""
    runs = [run for day in run_days(store, model) if (run := RunRecord.load(store, model, day))]
    return max(runs, key=lambda run: run.finished_at, default=None)


def _is_day(text: str) -> bool:
    try:
        dt.date.fromisoformat(text)
    except ValueError:
        return False
    return True
