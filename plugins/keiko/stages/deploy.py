"""deploy: roll the blessed version out to the model servers one replica at a time, then move the
`production` alias. Any failure puts the moved replicas back on the previous version, leaves the alias
where it was and fails the task with a one-line reason. deploy.json records every step per replica."""

from __future__ import annotations

from keiko.errors import KeikoError, StageSkipped
from keiko.rollout import RolloutFailed, SmokeTest
from keiko.rollout.local import LocalRollout
from keiko.stages.context import StageContext


def run(ctx: StageContext) -> dict:
    name = ctx.model.name
    version = ctx.stage_result("register")["version"]
    entry = ctx.registry.get(name, version)
    current = ctx.registry.alias(name, "production")
    if entry.status != "registered":
        raise StageSkipped(
            f"{name} v{version} not deployed: {entry.status}: {entry.reason}; production stays v{current}"
        )
    if ctx.deploy_mode == "skip":
        raise StageSkipped(f"{name} v{version} not deployed: the run asked deploy=skip; production stays v{current}")

    urls = ctx.settings.serving_urls(name, ctx.model.config.serving.port, ctx.model.config.serving.replicas)
    golden = ctx.store.read_table(ctx.stage_result("evaluate")["golden_uri"])
    rollout = LocalRollout(urls=urls, smoke=SmokeTest.from_golden(golden), log=ctx.log)
    ctx.log(f"deploy {name} v{version} to {len(urls)} replica(s) one at a time (production is v{current})")
    record = {"model": name, "version": version, "previous_version": current, "replicas": urls}
    try:
        events = rollout.run(version, current)
    except RolloutFailed as exc:
        ctx.store.write_json(
            ctx.uri("deploy.json"),
            {**record, "success": False, "reason": str(exc), "rolled_back": exc.rolled_back,
             "events": [e.to_dict() for e in exc.events]},
        )  # fmt: skip
        raise
    if current == version:
        ctx.log(f"v{version} was already production: nothing to move")
    else:
        try:
            ctx.registry.move_alias(name, version, expected=current, note=f"deploy run {ctx.run_id or 'cli'}")
        except KeikoError as exc:
            raise KeikoError(f"replicas serve v{version} but the alias did not move: {exc}") from None
        ctx.log(f"all {len(urls)} replica(s) serve v{version}; production alias moved v{current} -> v{version}")
    ctx.store.write_json(ctx.uri("deploy.json"), {**record, "success": True, "events": [e.to_dict() for e in events]})
    return {"version": version, "previous_version": current, "servers": urls}
