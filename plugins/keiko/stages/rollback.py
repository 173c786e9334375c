"""rollback: after a failure (trigger rule one_failed), put production back through the production path.

A check never changes production: this visible task does, so the graph and the run page show it. What this
run did decides what it does:

| this run's deploy                                   | rollback                                           |
|-----------------------------------------------------|----------------------------------------------------|
| moved production P -> V, then gate_serving failed   | back to P: servers (P's own known answers), alias  |
| started a canary of V beside P, which did not end   | every user back on P (the canary ended)            |
| started a canary that reverted or kept P itself     | nothing to do (skipped)                            |
| failed, and put the servers it moved back itself    | nothing to do (skipped)                            |
| failed otherwise, or its process died mid-rollout   | every server onto what the alias names             |
| skipped, or never reached (an earlier step failed)  | nothing to do (skipped)                            |

Airflow runs this task when any step before it failed (its upstream's failure cascades as upstream_failed),
hence the last row. It refuses, naming why, when there is nothing to go back to or production has moved
since the deploy.
"""

from __future__ import annotations

from keiko.contract import CanaryRecord, DeployResult, ProductionChange, RollbackResult
from keiko.errors import KeikoError, StageSkipped
from keiko.rollout.known_answers import golden_rows, known_answers
from keiko.rollout.production import Change, ProductionPath
from keiko.runs import RunRecord
from keiko.stages.context import StageContext
from keiko.stages.deploy import requested_by


def target(ctx: StageContext) -> tuple[int, int, str]:
    """(the version to put back into production, the version production should be on now, why);
    StageSkipped when this run changed nothing that needs undoing."""
    name = ctx.model.name
    run = RunRecord.load(ctx.store, name, ctx.ds.isoformat())
    steps = run.steps if run is not None and run.run_id == ctx.run_id else {}
    registered, deploy = steps.get("register"), steps.get("deploy")
    if registered is None or registered.outcome != "success" or (deploy and deploy.outcome == "skipped"):
        raise StageSkipped(f"this run of {name} {ctx.ds} did not deploy: nothing to roll back")
    if deploy is not None and deploy.outcome == "success":
        deployed = ctx.result(DeployResult)
        canary = ctx.layout.find(ctx.layout.canary_record, CanaryRecord) if deployed.strategy != "rolling" else None
        if canary is not None and canary.state in ("reverted", "kept stable"):
            raise StageSkipped(f"the {canary.strategy} ended itself: {canary.message}")
        if canary is not None and canary.state == "running":
            stable = canary.stable_version
            return (
                stable,
                stable,
                f"{canary.strategy} of v{canary.version} did not finish: every user back on v{stable}",
            )
        if deployed.previous_version in (None, deployed.version):
            raise KeikoError(f"no previous version to roll back to: v{deployed.version} keeps serving")
        return deployed.previous_version, deployed.version, f"gate_serving failed {ctx.ds}"
    # The deploy failed or died. Its record, if this deploy wrote one, says whether it put the servers back.
    record = ctx.layout.find(ctx.layout.deploy_record, ProductionChange)
    if record and record.rolled_back and record.started_since(registered.finished_at):
        raise StageSkipped(f"deploy failed and put the replicas back itself: {record.message}")
    current = ctx.registry.alias(name)
    if current is None:
        raise StageSkipped(f"{name} has no production version: no replica to put back")
    return current, current, f"deploy of {ctx.ds} did not finish: every replica back on production"


def run(ctx: StageContext) -> RollbackResult:
    name = ctx.model.name
    version, expected, why = target(ctx)
    entry = ctx.registry.get(name, version)
    rows = golden_rows(ctx.store, name, (ctx.ds.isoformat(), entry.ds))
    path = ProductionPath(model=ctx.model, resources=ctx.resources, log=ctx.log)
    ctx.log(f"roll back {name} to v{version} ({why}); production is v{ctx.registry.alias(name)}")
    change = path.change(
        Change(
            action="rollback",
            version=version,
            expected=expected,
            smoke=known_answers(ctx.store, ctx.model, entry, rows),
            requested_by=requested_by(ctx, "rollback", version),
            reason=why,
            note=why,
            record_uri=ctx.layout.rollback_record,
        )
    )
    done = "replicas and production alias" if change.alias_moved else "replicas; the alias already named it"
    ctx.log(f"{change.message}: rolled back to v{version} ({done})")
    return RollbackResult(
        version=version, previous_version=change.from_version, servers=change.replicas,
        production_moved=change.alias_moved,
    )  # fmt: skip
