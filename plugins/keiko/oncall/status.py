"""`keiko status`: every model's production version, how long it has served and on how fresh data, and
how its last run ended (the failed or skipped step with its one-line message)."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

from keiko.oncall import age, parse_time, when
from keiko.registry import Registry
from keiko.runs import RunRecord, latest_run, one_line
from keiko.storage import ArtifactStore

MESSAGE_CHARS = 120  # of a step's message in the table; --json has all of it


@dataclass(frozen=True)
class ModelStatus:
    model: str
    production: int | None
    since: str | None  # when the alias moved to it (ISO 8601)
    window_end: str | None  # the last day of data production was trained on
    last_run: RunRecord | None


def gather(store: ArtifactStore, registry: Registry, models: list[str]) -> list[ModelStatus]:
    statuses = []
    for model in models:
        production = registry.alias(model)
        history = registry.history(model)
        statuses.append(
            ModelStatus(
                model=model,
                production=production,
                since=parse_time(history[-1]["at"]).isoformat() if production is not None and history else None,
                window_end=registry.get(model, production).window_end if production is not None else None,
                last_run=latest_run(store, model),
            )
        )
    return statuses


def run_summary(run: RunRecord) -> dict[str, Any]:
    """The run's outcome and the step that explains it: the failed one, else the one Airflow retries, else a
    skipped one (deploy skipped: not promoted), else the furthest one reached while incomplete; no step for a clean
    run."""
    outcome = run.outcome
    step = run.failed or run.retrying or next((s for s in run.steps.values() if s.outcome == "skipped"), None)
    if step is None and outcome == "incomplete":
        step = run.last_step
    return {
        "ds": run.ds,
        "run_id": run.run_id,
        "outcome": outcome,
        "finished_at": run.finished_at,
        "step": step.task_id if step else None,
        "step_outcome": step.outcome if step else None,
        "message": step.message if step else None,
    }


def to_json(statuses: list[ModelStatus], now: dt.datetime) -> list[dict[str, Any]]:
    return [
        {
            "model": s.model,
            "production": None
            if s.production is None
            else {
                "version": s.production,
                "since": s.since,
                "age_seconds": (now - parse_time(s.since)).total_seconds() if s.since else None,
                "window_end": s.window_end,
            },
            "last_run": run_summary(s.last_run) if s.last_run else None,
        }
        for s in statuses
    ]


def format_table(statuses: list[ModelStatus], now: dt.datetime) -> str:
    headers = ("model", "production", "since", "for", "data to", "last run", "outcome", "step: message")
    rows = []
    for item in to_json(statuses, now):
        production, run = item["production"], item["last_run"]
        served = (
            (
                f"v{production['version']}",
                when(production["since"]),
                age(production["age_seconds"]) if production["age_seconds"] is not None else "-",
                production["window_end"],
            )
            if production
            else ("none", "-", "-", "-")
        )
        if run:
            step = f"{run['step']} {run['step_outcome']}: {run['message']}" if run["step"] else ""
            detail = one_line(step, MESSAGE_CHARS)
            ran = (run["ds"], run["outcome"], detail)
        else:
            ran = ("none", "-", "")
        rows.append((item["model"], *served, *ran))
    widths = [max([len(h), *(len(r[i]) for r in rows)]) for i, h in enumerate(headers)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in [headers, *rows]]
    return "\n".join(lines)


def status(as_json: bool) -> str:
    """What `keiko status` prints, for every model of the project."""
    import json

    from keiko.config import settings
    from keiko.modeldef import model_names
    from keiko.registry import open_registry
    from keiko.storage import open_store

    config = settings()
    statuses = gather(open_store(config), open_registry(config.registry_url), model_names())
    now = dt.datetime.now(dt.UTC)
    return json.dumps(to_json(statuses, now), indent=2) if as_json else format_table(statuses, now)
