"""`keiko status`: every model's production version, how long it has served and on how fresh data, and
how its last run ended (the failed or skipped step with its one-line message).

Below the table, a block for each model with a rollout to tell of: its latest canary (or A/B experiment), from
the model's CanaryPointer and the CanaryRecord it names, and what each server says it serves now (/version). A
running one reads its step, weight, how long the step has held against the plan's bounds (model.yaml's
deploy.<strategy>), its last verdict, and each server; a finished one is a line with its end. A server carrying a
canary without a running record is said too (a canary started outside a run, or its record lost): `keiko rollback`
ends it. An unreachable server is said, never a crash.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from keiko.contract import CanaryPointer, CanaryRecord, ModelLayout, parse
from keiko.errors import InfrastructureError, KeikoError
from keiko.modeldef import RolloutPlan
from keiko.oncall import age, parse_time, when
from keiko.registry import Registry
from keiko.runs import RunRecord, latest_run, one_line
from keiko.storage import ArtifactStore

MESSAGE_CHARS = 120  # of a step's message in the table; --json has all of it
SERVER_TIMEOUT = 3.0  # seconds for each server's /version: a server down must not hold the whole status
STRATEGY_NAMES = {"canary": "canary", "ab": "A/B experiment"}


@dataclass(frozen=True)
class ModelStatus:
    model: str
    production: int | None
    since: str | None  # when the alias moved to it (ISO 8601)
    window_end: str | None  # the last day of data production was trained on
    last_run: RunRecord | None
    rollout: Rollout | None = None  # None: no canary recorded, none on the servers (or they were not asked)


@dataclass(frozen=True)
class ServerState:
    """What one serving URL said of itself (/version)."""

    url: str
    version: int | None = None
    canary: dict[str, Any] | None = None  # /version's canary: version, weight, salt, loaded_at
    error: str = ""  # it did not answer: "unreachable", or what went wrong


@dataclass(frozen=True)
class Rollout:
    """The model's latest canary or A/B experiment and what its servers serve now."""

    pointer: CanaryPointer | None
    record: CanaryRecord | None
    plan: RolloutPlan | None  # the record's strategy in model.yaml now (None: record absent, or no such settings)
    servers: list[ServerState] = field(default_factory=list)
    error: str = ""  # why the pointer's record, or its plan, could not be read

    @property
    def running(self) -> bool:
        return self.record is not None and self.record.running

    @property
    def serving_canary(self) -> int | None:
        """The canary version a server reports serving, if any does."""
        return next((s.canary["version"] for s in self.servers if s.canary), None)


def probe_servers(urls: list[str], timeout: float = SERVER_TIMEOUT) -> list[ServerState]:
    """Each URL's /version; one that does not answer is said, not raised."""
    from keiko.serving.client import ModelServerClient

    states = []
    for url in urls:
        try:
            with ModelServerClient(url, timeout=timeout) as server:
                answer = server.version()
            states.append(ServerState(url, answer.get("version"), answer.get("canary") or None))
        except InfrastructureError:
            states.append(ServerState(url, error="unreachable"))
        except Exception as exc:  # an answer that is not /version's JSON: said, status goes on
            states.append(ServerState(url, error=one_line(f"answered {type(exc).__name__}: {exc}", 120)))
    return states


def model_servers(model: str) -> list[ServerState]:
    """What the model's serving URLs (KEIKO_SERVING_URLS_<MODEL>, the Service, or the local replicas) say."""
    from keiko.config import settings
    from keiko.modeldef import load_model

    serving = load_model(model).config.serving
    return probe_servers(settings().serving_urls(model, serving.port, serving.replicas))


def latest_canary(store: ArtifactStore, model: str) -> tuple[CanaryPointer | None, CanaryRecord | None, str]:
    """The model's CanaryPointer, the CanaryRecord it names and, when either is unreadable or missing, why."""
    uri = ModelLayout(store, model).canary_pointer
    if not store.exists(uri):
        return None, None, ""
    try:
        pointer = parse(store.read_bytes(uri), CanaryPointer, uri)
    except KeikoError as exc:
        return None, None, str(exc)
    if not store.exists(pointer.record_uri):
        return pointer, None, f"the canary pointer names {pointer.record_uri}, which does not exist"
    try:
        return pointer, parse(store.read_bytes(pointer.record_uri), CanaryRecord, pointer.record_uri), ""
    except KeikoError as exc:
        return pointer, None, str(exc)


def read_rollout(store: ArtifactStore, model: str, servers: list[ServerState]) -> Rollout | None:
    """The model's latest rollout beside what `servers` serve; None when there is nothing to tell."""
    pointer, record, error = latest_canary(store, model)
    if pointer is None and not error and not any(s.canary for s in servers):
        return None
    plan = None
    if record is not None:
        from keiko.modeldef import load_model

        try:
            plan = load_model(model).config.deploy.plan(record.strategy)
        except KeikoError as exc:
            error = f"its plan: {exc}"
    return Rollout(pointer=pointer, record=record, plan=plan, servers=servers, error=error)


def gather(
    store: ArtifactStore,
    registry: Registry,
    models: list[str],
    servers: Callable[[str], list[ServerState]] | None = None,
) -> list[ModelStatus]:
    """Each model's status; with `servers` (model -> what its servers say), its rollout too."""
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
                rollout=read_rollout(store, model, servers(model)) if servers else None,
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


def rollout_summary(rollout: Rollout, now: dt.datetime) -> dict[str, Any]:
    """The rollout as --json gives it; the text block is drawn from this."""
    record, pointer, plan = rollout.record, rollout.pointer, rollout.plan
    summary: dict[str, Any] = {
        "record_uri": pointer.record_uri if pointer else None,
        "ds": pointer.ds if pointer else None,
        "error": rollout.error or None,
        "servers": [{"url": s.url, "version": s.version, "canary": s.canary, "error": s.error or None}
                    for s in rollout.servers],
    }  # fmt: skip
    if record is None:
        return {**summary, "state": None}
    step = plan.steps[record.step - 1] if plan and 0 < record.step <= len(plan.steps) else None
    last = record.verdicts[-1] if record.verdicts else None
    return {
        **summary,
        "strategy": record.strategy,
        "version": record.version,
        "stable_version": record.stable_version,
        "run_id": record.run_id,
        "state": record.state,
        "step": record.step,
        "steps": len(plan.steps) if plan else None,
        "weight": record.weight,
        "salt": record.salt,
        "started_at": record.started_at,
        "step_started_at": record.step_started_at,
        "held_minutes": (now - parse_time(record.step_started_at)).total_seconds() / 60 if record.running else None,
        "min_hold_minutes": step.hold_minutes if step else None,
        "max_hold_minutes": plan.max_hold_minutes if plan else None,
        "last_verdict": {"verdict": last.verdict, "step": last.step, "at": last.at, "summary": last.summary}
        if last
        else None,
        "finished_at": record.finished_at,
        "message": record.message,
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
        | ({"rollout": rollout_summary(s.rollout, now)} if s.rollout else {})
        for s in statuses
    ]


def _server(server: dict[str, Any]) -> str:
    if server["error"]:
        return f"{server['url']} {server['error']}"
    served = "no model" if server["version"] is None else f"v{server['version']}"
    canary = server["canary"]
    return f"{server['url']} {served}" + (f" + canary v{canary['version']} at {canary['weight']:.0%}" if canary else "")


def _minutes(value: float | None) -> str:
    return "?" if value is None else f"{value:g}"


def rollout_lines(model: str, production: int | None, rollout: dict[str, Any]) -> list[str]:
    """The rollout's block under the table: a running one with its step, holds, verdict and servers; a finished
    one in a line; a canary on a server that no running record explains."""
    servers = rollout["servers"]
    carrying = [s for s in servers if s["canary"]]
    lines = []
    if rollout["error"]:
        lines.append(f"{model}: canary record unreadable: {rollout['error']}")
    state = rollout["state"]
    if state == "running":
        name, version, stable = STRATEGY_NAMES[rollout["strategy"]], rollout["version"], rollout["stable_version"]
        steps = f" of {rollout['steps']}" if rollout["steps"] else ""
        holds = f"of at least {_minutes(rollout['min_hold_minutes'])}, at most {_minutes(rollout['max_hold_minutes'])}"
        last = rollout["last_verdict"]
        verdict = f"last verdict {last['verdict']}: {one_line(last['summary'])}" if last else "no verdict yet"
        lines.append(
            f"{model}: {name} v{version} beside production v{stable} (run {rollout['run_id'] or 'by hand'}, "
            f"ds {rollout['ds']}): step {rollout['step']}{steps} at {rollout['weight']:.0%} of users, held "
            f"{rollout['held_minutes']:.1f} min ({holds}), {verdict}"
        )
        lines.append("  servers: " + (", ".join(_server(s) for s in servers) or "none configured"))
        if production != stable:
            lines.append(f"  production is {'none' if production is None else f'v{production}'} now, not v{stable}")
        answered = [s for s in servers if not s["error"]]
        if answered and not any(s["canary"] and s["canary"]["version"] == version for s in answered):
            lines.append(
                f"  no server carries canary v{version}: it was ended outside the canary stage (keiko rollback, the "
                "rollback task); the stage's next analysis fails"
            )
        return lines
    if state is not None:
        name = STRATEGY_NAMES[rollout["strategy"]]
        lines.append(
            f"{model}: {name} v{rollout['version']} beside v{rollout['stable_version']} {state} at "
            f"{when(rollout['finished_at'])}: {one_line(rollout['message'])}"
        )
    if carrying:
        lines.append(
            f"{model}: canary on the servers with no running rollout record (a canary started outside a run, or its "
            f"record lost): {', '.join(_server(s) for s in carrying)}; `keiko rollback {model}` ends it"
        )
    return lines


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
    blocks = [
        line
        for item in to_json(statuses, now)
        if "rollout" in item
        for line in rollout_lines(item["model"], (item["production"] or {}).get("version"), item["rollout"])
    ]
    return "\n".join(lines + (["", *blocks] if blocks else []))


def status(as_json: bool, models: list[str] | None = None) -> str:
    """What `keiko status` prints, for `models` (default: every model of the project)."""
    import json

    from keiko.config import settings
    from keiko.modeldef import load_model, model_names
    from keiko.registry import open_registry
    from keiko.storage import open_store

    config = settings()
    for model in models or []:
        load_model(model)  # an unknown name: one line naming the known ones
    statuses = gather(
        open_store(config), open_registry(config.registry_url), models or model_names(), servers=model_servers
    )
    now = dt.datetime.now(dt.UTC)
    return json.dumps(to_json(statuses, now), indent=2) if as_json else format_table(statuses, now)
