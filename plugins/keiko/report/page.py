"""The run page (RunLayout.report), one page per model run: what on-call reads first.

keiko.step_runner redraws it after every step, so it must draw any partial run: each section whose step is
not part of the run says why ("not reached: the run failed at gate_raw", "skipped: ...", "not run").
Only files of steps that ran in this run are read: a rerun that stops early leaves the earlier run's
later artifacts in the same directory, and they are not this run's.

Three parts: `read_run` (I/O: the run directory and the registry into a `RunFiles`), `page_data` (pure:
what every section shows, as display strings) and `render` (pure: the Jinja template, autoescaped).
Every link is a path relative to the run directory: the page is served over HTTP from there.
"""

from __future__ import annotations

import datetime as dt
import math
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

import jinja2

from keiko.contract import (
    CALIBRATION_PLOT,
    DRIFT_PLOT,
    RESULTS,
    ROC_PLOT,
    Blessing,
    CanaryRecord,
    CanaryVerdict,
    Evaluation,
    GateResult,
    ProductionChange,
    RawGateResult,
    RolloutState,
    RunLayout,
    StepResult,
)
from keiko.pipeline import DATA_WAIT, STAGES, STEPS, TASK_IDS
from keiko.runs import RunRecord
from keiko.storage import ArtifactStore

TEMPLATE = "run_page.html.j2"
GATE_TASKS = tuple(task for task in TASK_IDS if STEPS[task].kind == "gate")
NONE = "–"  # what a table shows for a value that does not exist


@dataclass
class RunFiles:
    """What the page is drawn from. An absent entry is a part this run has not written."""

    model: str
    ds: str
    run: RunRecord | None
    stages: dict[str, StepResult] = field(default_factory=dict)  # task id -> result (stages that succeeded)
    gates: dict[str, GateResult] = field(default_factory=dict)  # task id (gate_raw) -> its verdict
    evaluation: Evaluation | None = None
    blessing: Blessing | None = None
    deploy: ProductionChange | None = None
    rollback: ProductionChange | None = None  # the rollback task's change
    canary: CanaryRecord | None = None  # the canary or A/B experiment this run's deploy started
    plots: frozenset[str] = frozenset()  # the plots this run drew, relative to the run directory
    version: dict | None = None  # this run's registry entry (ModelVersion.to_dict())
    production: dict | None = None  # the version the `production` alias points at now
    registry_error: str = ""


# ---------------------------------------------------------------------------------------------- I/O


def read_run(store: ArtifactStore, model: str, ds: str, registry_url: str | None) -> RunFiles:
    """Read what the latest run of `model` for `ds` wrote, and its registry entries (none without a URL)."""
    run = RunRecord.load(store, model, ds)
    files = RunFiles(model, ds, run)
    layout = RunLayout(store, model, ds)
    steps = run.steps if run else {}
    ended = {task for task, step in steps.items() if step.outcome != "skipped"}
    succeeded = {task for task, step in steps.items() if step.outcome == "success"}

    read = layout.find
    files.stages = {t: r for t in STAGES if t in succeeded and (r := read(layout.step_result(t), RESULTS[t]))}
    for task in (t for t in GATE_TASKS if t in ended):
        result = read(layout.step_result(task), RESULTS[task])
        # A failed step beside a passing verdict: the gate stopped before writing its own, that one is older.
        if result is not None and (task in succeeded or not result.success):
            files.gates[task] = result
    if "gate_evaluation" in ended:  # gate_evaluation deletes the blessing first: what is there is its own
        files.blessing = read(layout.blessing, Blessing)
    if "evaluate" in succeeded:
        files.evaluation = read(layout.evaluation, Evaluation)
    for task, uri in (("deploy", layout.deploy_record), ("rollback", layout.rollback_record)):
        record = read(uri, ProductionChange) if task in ended else None
        if record and record.started_since(steps[task].started_at):  # not an earlier run's
            setattr(files, task, record)
    canary = read(layout.canary_record, CanaryRecord) if "deploy" in ended else None
    # Its times are in whole seconds: one started in the second the deploy did is this run's.
    if canary and _moment(canary.started_at) >= _moment(steps["deploy"].started_at).replace(microsecond=0):
        files.canary = canary
    # evaluate draws its plots near its end; gate_features deletes its chart first, so a failed one shows its own.
    ours = {
        ROC_PLOT: "evaluate" in succeeded,
        CALIBRATION_PLOT: "evaluate" in succeeded,
        DRIFT_PLOT: "gate_features" in ended,
    }
    files.plots = frozenset(plot for plot, drawn in ours.items() if drawn and store.exists(layout.plot(plot)))
    if registry_url:
        _read_registry(files, registry_url)
    return files


def _read_registry(files: RunFiles, registry_url: str) -> None:
    from keiko.registry import open_registry

    try:
        registry = open_registry(registry_url)
        if registered := files.stages.get("register"):
            files.version = registry.get(files.model, registered.version).to_dict()
        if (production := registry.alias(files.model)) is not None:
            files.production = registry.get(files.model, production).to_dict()
    except Exception as exc:  # an unreachable registry must not keep the rest of the page from drawing
        files.registry_error = f"{type(exc).__name__}: {exc}"


def run_page(store: ArtifactStore, model: str, ds: str, note: str = "") -> str:
    """The run's page as HTML, from what the run has written so far; `note` (what Airflow says of a run no step
    has recorded yet) goes in the header."""
    from keiko.config import settings

    page = page_data(read_run(store, model, ds, settings().registry_url))
    if note:
        page["header"]["message"] = note
    return render(page)


def write_run_page(store: ArtifactStore, model: str, ds: str) -> str:
    """Draw the run's page from what the run has written so far; returns its URI."""
    html = run_page(store, model, ds)
    uri = RunLayout(store, model, ds).report
    store.write_bytes(uri, html.encode())
    return uri


# ------------------------------------------------------------------------------ what the page shows


def _number(value: Any, spec: str) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return NONE
    return format(value, spec)


def _unreached(run: RunRecord | None) -> str:
    """What a step the run has no record of is: not reached (the run failed before it), skipped (Airflow
    skips the tasks after a skipped one without running them) or not run (yet, or the run stopped)."""
    if run is None:
        return "not run"
    if run.failed is not None:
        return "not reached"
    return "skipped" if run.outcome == "complete" else "not run"


def _missing(run: RunRecord | None, task: str) -> str:
    """Why `task` has nothing to show, in words."""
    step = run.steps.get(task) if run else None
    if step is not None and step.outcome == "success":
        return f"{task} succeeded but left nothing for this section"
    if step is not None:
        return f"{step.outcome}: {step.message}"
    unreached = _unreached(run)
    if unreached == "not reached":
        return f"not reached: the run failed at {run.failed.task_id}"
    if unreached == "skipped":
        return f"skipped: {run.last_step.task_id} was skipped"
    return unreached


def _inside_run(uri: str | None, model: str, ds: str) -> str | None:
    """`uri` as a path relative to the run directory, or None if it is not under it.

    Matched on `/{model}/{ds}/`, not on the whole root: a copied or moved artifact root keeps its links.
    """
    marker = f"/{model}/{ds}/"
    if not uri or marker not in uri:
        return None
    relative = uri.rsplit(marker, 1)[1]
    return None if relative.startswith("/") or ".." in relative.split("/") else relative


def _trigger_rows(trigger: dict[str, Any]) -> list[tuple[str, str]]:
    rows = [(key, str(value) or NONE) for key, value in trigger.items() if key != "algorithm"]
    return rows + [(f"algorithm.{key}", str(value)) for key, value in (trigger.get("algorithm") or {}).items()]


def header_section(files: RunFiles) -> dict[str, Any]:
    run = files.run
    if run is None:
        state, text, message = "incomplete", "no step of this run has been recorded yet", ""
    elif run.failed is not None:
        state, text, message = "failed", f"failed at {run.failed.task_id}", run.failed.message
    elif run.retrying is not None:
        state, text, message = "incomplete", f"retrying {run.retrying.task_id}", run.retrying.message
    elif run.outcome == "complete":
        skipped = [task for task, step in run.steps.items() if step.outcome == "skipped"]
        state, text, message = "complete", "complete" + (f" (skipped: {', '.join(skipped)})" if skipped else ""), ""
    else:
        state, text, message = "incomplete", f"incomplete: running, or stopped after {run.last_step.task_id}", ""
    trigger = run.trigger if run else None
    extract = files.stages.get("extract")
    return {
        "model": files.model,
        "ds": files.ds,
        "run_id": (run.run_id if run else "") or "(none: run by hand)",
        "state": state,
        "text": text,
        "message": message,
        "finished_at": run.finished_at if run else "",
        "data": f"{extract.rows:,} rows, window {extract.window_start} .. {extract.window_end}"
        if extract
        else "extract " + _missing(run, "extract"),
        "trigger": _trigger_rows(trigger) if trigger else [],
        "trigger_missing": "" if trigger else "no step recorded yet",
    }


def step_rows(files: RunFiles) -> list[dict[str, str]]:
    rows = []
    for task in (DATA_WAIT, *TASK_IDS):
        step = files.run.steps.get(task) if files.run else None
        if step is None and task == DATA_WAIT:  # it records only its failure
            continue
        if step is None:
            rows.append({"task": task, "outcome": _unreached(files.run), "seconds": "", "message": ""})
        else:
            rows.append(
                {"task": task, "outcome": step.outcome, "seconds": f"{step.seconds:.1f}", "message": step.message}
            )
    return rows


def _expectation_row(outcome: Any) -> dict[str, str]:
    return {
        "suite": outcome.suite,
        "expectation": outcome.expectation.removeprefix("expect_"),
        "column": outcome.column,
        "observed": outcome.observed,
        "expected": outcome.expected,
    }


def gate_sections(files: RunFiles) -> list[dict[str, Any]]:
    sections = []
    for task in GATE_TASKS:
        result = files.gates.get(task)
        if result is None:
            sections.append({"task": task, "state": "absent", "text": _missing(files.run, task)})
            continue
        outcomes = result.outcomes
        failed = [_expectation_row(o) for o in outcomes if not o.passed]
        passed = [_expectation_row(o) for o in outcomes if o.passed]
        sections.append(
            {
                "task": task,
                "state": "failed" if failed else "passed",
                "text": f"{len(failed)} of {len(outcomes)} expectations failed"
                if failed
                else f"all {len(outcomes)} expectations passed",
                "failed": failed,
                "passed": passed,
                "docs": _inside_run(result.data_docs, files.model, files.ds),
            }
        )
    return sections


def volume_section(files: RunFiles) -> dict[str, Any]:
    """Each day's rows (the window's, and the earlier days' the band was judged against) as bar widths."""
    raw = files.gates.get("gate_raw")
    if not isinstance(raw, RawGateResult) or not raw.daily_rows:
        return {"missing": _missing(files.run, "gate_raw")}
    band = raw.volume_band
    days = [(day, n, "earlier") for day, n in sorted(raw.history_rows.items())]
    days += [(day, n, "test day" if day == files.ds else "window") for day, n in sorted(raw.daily_rows.items())]
    scale = max([n for _, n, _ in days] + (band or [])) or 1
    rates = raw.daily_label_rate
    rows = [
        {
            "day": day,
            "kind": kind,
            "rows": f"{n:,}",
            "width": f"{100 * n / scale:.1f}",
            "outside": band is not None and kind != "earlier" and not band[0] <= n <= band[1],
            "label_rate": _number(rates.get(day), ".3%"),
        }
        for day, n, kind in days
    ]
    return {
        "missing": "",
        "rows": rows,
        "band": f"{band[0]:,.0f} to {band[1]:,.0f} rows" if band else "",
        "band_left": f"{100 * band[0] / scale:.1f}" if band else "",
        "band_width": f"{100 * (band[1] - band[0]) / scale:.1f}" if band else "",
        "reference": _number(raw.volume_reference, ",.0f"),
    }


def drift_section(files: RunFiles) -> dict[str, Any]:
    result = files.gates.get("gate_features")
    if result is None:
        return {"missing": _missing(files.run, "gate_features")}
    rows = [
        {"column": o.column, "kl": o.observed, "threshold": o.expected, "passed": o.passed}
        for o in result.outcomes
        if o.suite == "drift"
    ]
    return {
        "missing": "",
        "rows": sorted(rows, key=lambda row: row["passed"]),  # drifting features first
        "plot": DRIFT_PLOT if DRIFT_PLOT in files.plots else None,
        "note": "" if rows else "drift not judged: the test day has fewer rows than gates.features.min_rows",
    }


def _metric_row(name: str, metrics: dict[str, Any], bayes: float | None, **extra: str) -> dict[str, str]:
    logloss = metrics.get("logloss")
    return {
        "name": name,
        "logloss": _number(logloss, ".5f"),
        "auc": _number(metrics.get("auc"), ".4f"),
        "calibration": _number(metrics.get("calibration"), ".3f"),
        "gap": _number(logloss / bayes - 1 if bayes and logloss is not None else None, "+.2%"),
        "rows": _number(metrics.get("rows"), ","),
        **extra,
    }


def metrics_section(files: RunFiles) -> dict[str, Any]:
    evaluation = files.evaluation
    if evaluation is None:
        return {"missing": _missing(files.run, "evaluate"), "blessing": blessing_verdict(files)}
    bayes = evaluation.bayes_optimal_logloss
    truth = _number(evaluation.candidate_calibration_to_truth, ".3f")
    rows = [_metric_row("candidate", evaluation.candidate.model_dump(), bayes, to_truth=truth)]
    if production := evaluation.production:
        rows.append(_metric_row(f"production v{production.version}", production.model_dump(), bayes, to_truth=NONE))
    if bayes is not None:
        calibration = evaluation.bayes_optimal_calibration
        rows.append(
            _metric_row("Bayes-optimal", {"logloss": bayes, "calibration": calibration}, bayes, to_truth="1.000")
        )
    slices = {
        column: [_metric_row(value, values.model_dump(), None) for value, values in by_value.items()]
        for column, by_value in evaluation.slices.items()
    }
    return {
        "missing": "",
        "rows": rows,
        "production_missing": "" if production else "no production model when this run evaluated",
        "test_rows": _number(evaluation.test_rows, ","),
        "slices": slices,
        "blessing": blessing_verdict(files),
    }


def blessing_verdict(files: RunFiles) -> dict[str, Any]:
    if files.blessing is None:
        return {"state": "absent", "text": "gate_evaluation " + _missing(files.run, "gate_evaluation")}
    blessed = files.blessing.blessed
    return {
        "state": "passed" if blessed else "failed",
        "text": ("blessed: " if blessed else "not blessed: ") + "; ".join(files.blessing.reasons),
    }


def plot_section(files: RunFiles) -> dict[str, Any]:
    drawn = [plot for plot in (ROC_PLOT, CALIBRATION_PLOT) if plot in files.plots]
    return {"images": drawn, "missing": "" if drawn else _missing(files.run, "evaluate")}


LINEAGE_FIELDS = (
    ("version", lambda v: f"v{v['version']}"),
    ("status", lambda v: v["status"] + (f": {v['reason']}" if v.get("reason") else "")),
    ("day", lambda v: v["ds"]),
    ("data window", lambda v: f"{v['window_start']} .. {v['window_end']}"),
    ("artifact", lambda v: v["artifact_uri"]),
    ("artifact sha256", lambda v: v["artifact_sha256"]),
    ("code version", lambda v: v["code_version"]),
    ("config sha256", lambda v: v["config_sha256"]),
    ("features sha256", lambda v: v["features_sha256"]),
    ("algorithm", lambda v: v["algorithm"]),
    ("trigger", lambda v: ", ".join(f"{k}={value}" for k, value in _trigger_rows(v.get("trigger") or {})) or NONE),
    ("run id", lambda v: v["run_id"] or NONE),
    ("registered at", lambda v: v["created_at"]),
)


def lineage_section(files: RunFiles) -> dict[str, Any]:
    this, production = files.version, files.production
    return {
        "rows": [
            (label, value(this) if this else "", value(production) if production else "")
            for label, value in LINEAGE_FIELDS
            if this or production
        ],
        "this_missing": "" if this else _missing(files.run, "register"),
        "production_missing": "" if production else "no production version",
        "error": files.registry_error,
    }


def _change(record: ProductionChange) -> dict[str, Any]:
    """One change of production (the deploy, or the rollback after a failed check) and its timeline."""
    if record.success:
        before = f"v{record.from_version}" if record.from_version is not None else "none"
        text = f"v{record.to_version} on {len(record.replicas)} replica(s) ({record.backend}), "
        text += f"production {before} -> v{record.to_version}" if record.alias_moved else record.message
    else:
        back = "rolled back to the previous version" if record.rolled_back else "NOT fully rolled back"
        text = f"failed: {record.message}; {back}"
    replicas: dict[str, list[dict[str, str]]] = {url: [] for url in record.replicas}
    for event in record.events:
        replicas.setdefault(event.replica, []).append(
            {
                "event": event.event,
                "version": _number(event.version, "d"),
                "at": event.at.partition("T")[2][:12],  # the time of day; the date is the run's
                "detail": event.detail,
            }
        )
    return {
        "action": record.action,
        "state": "passed" if record.success else "failed",
        "text": text,
        "by": record.requested_by,
        "replicas": replicas,
    }


def deploy_section(files: RunFiles) -> dict[str, Any]:
    changes = [_change(record) for record in (files.deploy, files.rollback) if record is not None]
    rollback = files.run.steps.get("rollback") if files.run else None
    rollback_note = f"rollback {rollback.outcome}: {rollback.message}" if rollback and not files.rollback else ""
    missing = "" if files.deploy else _missing(files.run, "deploy")
    return {"missing": missing, "changes": changes, "rollback_note": rollback_note}


ROLLOUT_STATES: dict[RolloutState, str] = {
    "running": "incomplete", "awaiting approval": "incomplete", "promoted": "passed", "reverted": "failed",
    "kept stable": "absent",
}  # fmt: skip
STRATEGIES = {"canary": "canary", "ab": "A/B experiment"}


def _moment(iso: str) -> dt.datetime:
    moment = dt.datetime.fromisoformat(iso)
    return moment if moment.tzinfo else moment.replace(tzinfo=dt.UTC)


def _at(iso: str) -> str:
    """A rollout's moment as a reader scans a timeline: 2026-11-22 17:31:05 (UTC)."""
    return iso.replace("T", " ")[:19]


def _pair(counts: dict[str, int], extra: dict[str, int] | None = None) -> str:
    """canary / stable, as the canary stage logs them; `extra` in parentheses (positives)."""
    text = f"{counts.get('canary', 0):,} / {counts.get('stable', 0):,}"
    return text + (f" ({extra.get('canary', 0):,} / {extra.get('stable', 0):,})" if extra is not None else "")


def _verdict_row(verdict: CanaryVerdict) -> dict[str, Any]:
    return {
        "kind": "verdict",
        "at": _at(verdict.at),
        "step": str(verdict.step),
        "weight": f"{verdict.weight:.0%}",
        "what": f"verdict {verdict.verdict}",
        "state": {"pass": "passed", "breach": "failed", "timeout": "failed"}.get(verdict.verdict, ""),
        "held": f"{verdict.held_minutes:.1f}",
        "requests": _pair(verdict.requests),
        "outcomes": _pair(verdict.outcomes, verdict.positives),
        "detail": verdict.summary,
        "checks": [
            {
                "check": c.check,
                "stable": _number(c.stable, ".4g"),
                "canary": _number(c.canary, ".4g"),
                "allowed": c.allowed,
                "verdict": c.verdict,
                "detail": c.detail,
            }
            for c in verdict.checks
        ],
    }


def rollout_section(files: RunFiles) -> dict[str, Any] | None:
    """The canary (or A/B experiment) this run's deploy started: its split, end, and timeline (events and each
    analysis's verdict, in time order); None for a run that started none."""
    record = files.canary
    if record is None:
        return None
    rows = [
        ("strategy", STRATEGIES[record.strategy]),
        ("canary", f"v{record.version}"),
        ("stable", f"v{record.stable_version} (production while it runs)"),
        ("salt", record.salt),
        ("state", record.state + (f" at step {record.step}, {record.weight:.0%} of users" if record.running else "")),
        ("started", _at(record.started_at)),
    ]
    if record.finished_at:
        rows.append(("finished", _at(record.finished_at)))
    if record.message:
        rows.append(("message", record.message))
    if record.report:
        rows.append(("experiment", record.report))
    timeline = [
        (
            _moment(event.at),
            0 if event.event == "started" else 2,  # at one moment: the start, then verdicts, then what they did
            {
                "kind": "event", "at": _at(event.at), "step": str(event.step), "weight": f"{event.weight:.0%}",
                "what": event.event, "state": ROLLOUT_STATES.get(event.event, ""), "held": "", "requests": "",
                "outcomes": "", "detail": event.detail, "checks": [],
            },
        )
        for event in record.timeline
    ]  # fmt: skip
    timeline += [(_moment(v.at), 1, _verdict_row(v)) for v in record.verdicts]
    return {
        "state": ROLLOUT_STATES[record.state],
        "rows": rows,
        "timeline": [row for _at_, _order, row in sorted(timeline, key=lambda item: item[:2])],
    }


def page_data(files: RunFiles) -> dict[str, Any]:
    """Everything the template shows, sections in page order (the rollout's only for a run that started one)."""
    return {
        "header": header_section(files),
        "steps": step_rows(files),
        "gates": gate_sections(files),
        "volume": volume_section(files),
        "drift": drift_section(files),
        "metrics": metrics_section(files),
        "plots": plot_section(files),
        "lineage": lineage_section(files),
        "deploy": deploy_section(files),
        "rollout": rollout_section(files),
    }


@cache
def _environment() -> jinja2.Environment:
    return jinja2.Environment(
        loader=jinja2.FileSystemLoader(Path(__file__).parent),
        autoescape=True,  # run text (messages, reasons, observed values) is data, never markup
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )


def render(page: dict[str, Any]) -> str:
    return _environment().get_template(TEMPLATE).render(**page)
