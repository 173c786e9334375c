"""deploy: put the blessed version into production through the production path (keiko.rollout.production).

The servers move one at a time (local replicas) or by their Deployment's controller (Kubernetes), each
checked against the golden set's offline answers; the `production` alias moves only after every one serves
the version. Any failure puts the moved servers back, leaves the alias where it was and fails the task with a
one-line reason. The change's record (every step per server) is the run's deploy record.
"""

from __future__ import annotations

from keiko.contract import DeployResult, EvaluateResult, RegisterResult
from keiko.errors import StageSkipped
from keiko.rollout import SmokeTest
from keiko.rollout.production import Change, ProductionPath, version_name
from keiko.stages.context import StageContext


def requested_by(ctx: StageContext, action: str, version: int) -> str:
    """Who changes production, in words (the lease holder): the run, or a command run by hand."""
    origin = f"run {ctx.run_id}" if ctx.run_id else f"`keiko stage {action}` by hand"
    return f"{action} of {ctx.model.name} v{version} for {origin}"


def run(ctx: StageContext) -> DeployResult:
    name = ctx.model.name
    version = ctx.result(RegisterResult).version
    entry = ctx.registry.get(name, version)
    current = ctx.registry.alias(name, "production")
    stays = f"production stays v{current}" if current else "there is no production version yet"
    if entry.status != "registered":
        raise StageSkipped(f"{name} v{version} not deployed: {entry.status}: {entry.reason}; {stays}")
    if ctx.deploy_mode == "skip":
        raise StageSkipped(f"{name} v{version} not deployed: the run asked deploy=skip; {stays}")

    path = ProductionPath(model=ctx.model, resources=ctx.resources, log=ctx.log)
    strategy = ctx.params.deploy_strategy
    if strategy != "rolling" and current in (None, version):
        why = "there is no production version" if current is None else f"v{version} is production already"
        ctx.log(f"deploy strategy {strategy}, but {why} to compare it with: rolling deploy")
        strategy = "rolling"
    if strategy != "rolling":
        from keiko.stages import canary

        ctx.log(f"{strategy} of {name} v{version} beside production v{current} ({', '.join(path.urls)})")
        canary.start(ctx, path, version, current, strategy)
        return DeployResult(version=version, previous_version=current, servers=path.urls, strategy=strategy)
    golden = ctx.store.read_table(ctx.result(EvaluateResult).golden_uri)
    ctx.log(
        f"deploy {name} v{version} ({ctx.settings.deploy_backend}: {', '.join(path.urls)}) one replica at a time; "
        f"production is {version_name(current)}"
    )
    change = path.change(
        Change(
            action="deploy",
            version=version,
            expected=current,
            smoke=SmokeTest.from_golden(golden),
            requested_by=requested_by(ctx, "deploy", version),
            reason=ctx.params.reason,
            note=f"deploy run {ctx.run_id or 'cli'}",
            record_uri=ctx.layout.deploy_record,
        )
    )
    ctx.log(change.message)
    return DeployResult(
        version=version, previous_version=change.from_version, servers=change.replicas,
        production_moved=change.alias_moved,
    )  # fmt: skip
