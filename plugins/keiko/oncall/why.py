"""`keiko why <model> <ds>`: in a few lines, why that day's run did or did not put its model in production.

The answer follows the run's record (keiko.runs) to the step that decided: a failed gate (its failed
expectations, observed against allowed), the blessing (which threshold, or which comparison with
production), registration (rejected, historical), deploy (skipped and why, or failed and whether the
replicas were rolled back), gate_serving and what the rollback after it did, or the promotion itself.
A run still going says which step it reached. Artifacts are read only for steps of that run, so a rerun
never explains itself with an earlier run's files.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Any

from keiko.contract import RESULTS, Blessing, CanaryRecord, GateResult, ProductionChange, RegisterResult, RunLayout
from keiko.errors import KeikoError
from keiko.oncall import when
from keiko.pipeline import TASK_IDS
from keiko.registry import ModelVersion, Registry
from keiko.runs import RunRecord
from keiko.storage import ArtifactStore

MAX_EXPECTATIONS = 3  # failed expectations shown; the rest are in the gate's Data Docs
REGRESSION = "logloss_regression"  # the blessing's one comparison with production (gates/evaluation.py)


@dataclass(frozen=True)
class RunFacts:
    """What the run recorded and where production stands now."""

    model: str
    ds: str
    run: RunRecord
    production: int | None  # the alias now
    history: list[dict[str, Any]] = field(default_factory=list)  # the alias's moves, oldest first
    gate: GateResult | None = None  # the result of the run's failed gate
    blessing: Blessing | None = None
    version: ModelVersion | None = None  # what register recorded
    deploy: ProductionChange | None = None  # the deploy's record
    rollback: ProductionChange | None = None  # the rollback task's record
    canary: CanaryRecord | None = None  # the deploy's canary or A/B experiment, if it started one


def gather(store: ArtifactStore, registry: Registry, model: str, ds: str) -> RunFacts:
    run = RunRecord.load(store, model, ds)
    layout = RunLayout(store, model, ds)
    if run is None:
        raise KeikoError(
            f"no run of {model} for {ds}: no step recorded under {layout.step_records} (a run that stopped at "
            "wait_for_data or on a refused param records none: its task log in Airflow says why)"
        )

    def artifact(task: str, uri: str, kind: type[Any], outcomes: tuple[str, ...]) -> Any:
        """The record at `uri` if this run's `task` wrote it (ended with one of `outcomes`)."""
        step = run.steps.get(task)
        return layout.find(uri, kind) if step and step.outcome in outcomes else None

    failed = run.failed
    gate = None
    if failed and failed.task_id.startswith("gate_"):
        gate = artifact(failed.task_id, layout.step_result(failed.task_id), RESULTS[failed.task_id], ("failed",))
    registered = artifact("register", layout.step_result("register"), RegisterResult, ("success",))
    return RunFacts(
        model=model,
        ds=ds,
        run=run,
        production=registry.alias(model),
        history=registry.history(model),
        gate=gate,
        blessing=artifact("gate_evaluation", layout.blessing, Blessing, ("success", "failed")),
        version=registry.get(model, registered.version) if registered else None,
        deploy=artifact("deploy", layout.deploy_record, ProductionChange, ("success", "failed")),
        rollback=artifact("rollback", layout.rollback_record, ProductionChange, ("success", "failed")),
        canary=artifact("deploy", layout.canary_record, CanaryRecord, ("success",)),
    )


def explain(facts: RunFacts) -> list[str]:
    """The headline (model, day, verdict), the lines that show why, and where production stands."""
    verdict, details = _verdict(facts)
    run = facts.run
    production = f"v{facts.production}" if facts.production is not None else "none"
    footer = f"  run {run.run_id or '(no run id)'}, {run.outcome}, last step {when(run.finished_at)}"
    return [f"{facts.model} {facts.ds}: {verdict}", *details, f"{footer}; production now: {production}"]


def _verdict(facts: RunFacts) -> tuple[str, list[str]]:
    run = facts.run
    if failed := run.failed:
        if failed.task_id == "gate_evaluation":
            return _not_blessed(facts)
        if failed.task_id == "deploy":
            return _deploy_failed(facts)
        if failed.task_id == "gate_serving":
            return (
                f"NOT promoted: {_deployed(facts)} was deployed, then gate_serving failed on the live replicas",
                [*_expectations(facts.gate), f"  {_rolled_back(facts)}"],
            )
        if failed.task_id.startswith("gate_"):
            return _gate_failed(facts)
        return f"NOT promoted: {failed.task_id} failed", [f"  {failed.message}"]
    if retrying := run.retrying:
        return f"not finished: {retrying.task_id} failed and Airflow retries it", [f"  {retrying.message}"]
    deploy = run.steps.get("deploy")
    if deploy and deploy.outcome == "skipped":
        return _not_deployed(facts, deploy.message)
    if deploy and deploy.outcome == "success" and (canary := facts.canary) is not None and canary.state != "promoted":
        return _canary_not_promoted(canary)
    if deploy and deploy.outcome == "success":
        return _promoted(facts)
    reached = run.last_step
    following = TASK_IDS[TASK_IDS.index(reached.task_id) + 1 :]
    return (
        f"not finished: reached {reached.task_id} ({reached.outcome} at {when(reached.finished_at)})",
        [f"  next: {following[0] if following else '-'}: still running, or stopped (check the DAG run)"],
    )


def _canary_not_promoted(canary: CanaryRecord) -> tuple[str, list[str]]:
    """A canary or A/B experiment still going, awaiting a person, or ended with stable serving."""
    last = canary.verdicts[-1] if canary.verdicts else None
    seen = f"  last verdict: {last.verdict} at step {last.step}: {last.summary}" if last else "  no analysis yet"
    if canary.state in ("running", "awaiting approval"):
        what = "is judged" if canary.state == "running" else "awaits a person's decision (approve_promotion)"
        return (
            f"not yet: v{canary.version} serves {canary.weight:.0%} of the users beside v{canary.stable_version} and "
            f"{what}",
            [seen],
        )
    return f"NOT promoted: the {canary.strategy} ended {canary.state}", [f"  {canary.message}", seen]


def _rolled_back(facts: RunFacts) -> str:
    """What the rollback task after the failed gate_serving did."""
    step = facts.run.steps.get("rollback")
    if step is None:
        return "rollback has not run (yet): `keiko status` says what serves"
    if facts.rollback is not None and step.outcome == "success":
        return facts.rollback.message
    return f"rollback {step.outcome}: {step.message}"


def _expectations(gate: GateResult | None) -> list[str]:
    """One line per failed expectation (a few), observed against allowed; then where the rest are."""
    if not gate:
        return []
    failed = [o for o in gate.outcomes if not o.passed]
    lines = [
        f"  {o.suite}: {o.expectation.removeprefix('expect_')} on {o.column}: "
        f"observed {o.observed}; allowed {o.expected}"
        for o in failed[:MAX_EXPECTATIONS]
    ]
    more = f"{len(failed) - MAX_EXPECTATIONS} more failed; " if len(failed) > MAX_EXPECTATIONS else ""
    if gate.data_docs:
        lines.append(f"  {more}Data Docs: {gate.data_docs}")
    return lines


def _gate_failed(facts: RunFacts) -> tuple[str, list[str]]:
    failed = facts.run.failed
    gate = facts.gate
    if not gate:  # the gate broke before judging: its message is all there is
        return f"NOT promoted: {failed.task_id} failed", [f"  {failed.message}"]
    return (
        f"NOT promoted: {failed.task_id} failed {gate.failed} of {gate.expectations} expectations",
        _expectations(gate),
    )


def _not_blessed(facts: RunFacts) -> tuple[str, list[str]]:
    gate, blessing, version = facts.gate, facts.blessing, facts.version
    if not gate:
        return _gate_failed(facts)
    failed = [o for o in gate.outcomes if not o.passed]
    production = blessing.production_version if blessing else None
    misses = []
    if any(o.column != REGRESSION for o in failed):
        misses.append("missed model.yaml's absolute thresholds")
    if any(o.column == REGRESSION for o in failed):
        misses.append(f"is worse than production v{production} on the same test day")
    verdict = f"NOT promoted: the candidate {' and '.join(misses)}"
    details = []
    for o in failed[:MAX_EXPECTATIONS]:
        line = f"  {o.column}: observed {o.observed}; allowed {o.expected}"
        if o.column == REGRESSION and version and version.metrics.get("production"):
            line += (
                f" (logloss {version.metrics['test']['logloss']:.5f} vs production's "
                f"{version.metrics['production']['logloss']:.5f})"
            )
        details.append(line)
    deploy = facts.run.steps.get("deploy")
    if version:
        details.append(
            f"  registered as v{version.version} ({version.status}); "
            + (f"deploy {deploy.outcome}" if deploy else "deploy has not run")
        )
    return verdict, details


def _not_deployed(facts: RunFacts, message: str) -> tuple[str, list[str]]:
    """deploy skips a version the registry does not let serve, or a run that asked deploy=skip."""
    version = facts.version
    if version is None:
        return "NOT promoted: deploy skipped", [f"  {message}"]
    name = f"v{version.version}"
    if version.status == "rejected":
        return f"NOT promoted: {name} was registered as rejected (not blessed)", [f"  blessing: {version.reason}"]
    if version.status == "historical":
        return f"NOT promoted: {name} is history, which never deploys", [f"  because {version.reason}"]
    if version.version == facts.production:  # e.g. a deploy=skip rerun of the day whose model serves
        return f"{name} is production already; this run skipped deploy and changed nothing", [f"  {message}"]
    return f"NOT promoted: {name} is registered but was not deployed", [f"  deploy skipped: {message}"]


def _deploy_failed(facts: RunFacts) -> tuple[str, list[str]]:
    failed, record = facts.run.failed, facts.deploy
    verdict = f"NOT promoted: deploy of {_deployed(facts)} failed"
    if not record or record.success:  # failed before the rollout touched a replica, or after it
        return verdict, [f"  {failed.message}"]
    back = f"v{record.from_version}" if record.from_version is not None else "the previous version"
    rolled_back = (
        f"replicas rolled back to {back}"
        if record.rolled_back
        else f"replicas NOT all rolled back to {back}: see the events in the deploy record ({record.record_uri})"
    )
    return verdict, [f"  {record.message}", f"  {rolled_back}; the production alias did not move"]


def _deployed(facts: RunFacts) -> str:
    if facts.version:
        return f"v{facts.version.version}"
    return f"v{facts.deploy.to_version}" if facts.deploy else "the candidate"


def _promoted(facts: RunFacts) -> tuple[str, list[str]]:
    record = facts.deploy
    version = facts.version.version if facts.version else record.to_version
    moves = [m for m in facts.history if m["to_version"] == version]
    if record is not None and record.from_version == version:
        verdict = f"PROMOTED: v{version} was already production, nothing moved"
    else:
        move = moves[-1] if moves else {}
        previous = f"v{move['from_version']}" if move.get("from_version") is not None else "none"
        verdict = f"PROMOTED: v{version} became production at {when(move.get('at'))} (previous: {previous})"
    details = []
    if facts.blessing:
        details.append(f"  blessing: {'; '.join(facts.blessing.reasons)}")
    serving = facts.run.steps.get("gate_serving")
    replicas = len(record.replicas) if record else 0
    how = f"rolled out to {replicas} replica(s)"
    if facts.canary is not None:
        steps = ", ".join(f"{e.weight:.0%}" for e in facts.canary.timeline if e.event in ("started", "advanced"))
        how = f"{facts.canary.strategy} on {replicas} replica(s), steps {steps}: {facts.canary.state}"
    details.append(
        f"  {how}; " + ("gate_serving passed on the live replicas" if serving else "gate_serving has not run yet")
    )
    if facts.production != version:
        later = facts.history[-1] if facts.history else {}
        details.append(
            f"  production has moved since: v{facts.production} at {when(later.get('at'))} "
            f"({later.get('note') or 'no note'})"
        )
    return verdict, details


def why(model: str, ds: dt.date) -> list[str]:
    """The lines `keiko why` prints; KeikoError for an unknown model or a day without a run."""
    from keiko.modeldef import load_model
    from keiko.resources import Resources

    resources = Resources()
    return explain(gather(resources.store, resources.registry, load_model(model).name, ds.isoformat()))
