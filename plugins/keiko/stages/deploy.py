"""deploy: roll the blessed version out to the model servers one replica at a time, then move the
`production` alias. Any failure puts the moved replicas back on the previous version, leaves the alias
where it was and fails the task with a one-line reason. deploy.json records every step per replica.

The backend is KEIKO_DEPLOY_BACKEND: `local` (replicas on loopback, moved through /admin/load) or
`kubernetes` (the model server's Deployment, rolled by its controller)."""

from __future__ import annotations

from keiko.config import DEPLOY_BACKENDS
from keiko.errors import KeikoError, StageSkipped
from keiko.rollout import Rollout, RolloutFailed, SmokeTest
from keiko.stages.context import StageContext


def rollout_backend(ctx: StageContext, urls: list[str], smoke: SmokeTest) -> Rollout:
    backend = ctx.settings.deploy_backend
    if backend == "kubernetes":
        from keiko.rollout.kubernetes import KubernetesRollout

        return KubernetesRollout(
            model=ctx.model.name,
            deployment=ctx.settings.server_deployment(ctx.model.name),
            namespace=ctx.settings.kubernetes_namespace,
            conn_id=ctx.settings.kubernetes_conn_id,
            log=ctx.log,
        )
    if backend == "local":
        from keiko.rollout.local import LocalRollout

        return LocalRollout(model=ctx.model.name, urls=urls, smoke=smoke, log=ctx.log)
    raise KeikoError(f"KEIKO_DEPLOY_BACKEND={backend!r}: expected one of {', '.join(DEPLOY_BACKENDS)}")


def run(ctx: StageContext) -> dict:
    name = ctx.model.name
    version = ctx.stage_result("register")["version"]
    entry = ctx.registry.get(name, version)
    current = ctx.registry.alias(name, "production")
    stays = f"production stays v{current}" if current else "there is no production version yet"
    if entry.status != "registered":
        raise StageSkipped(f"{name} v{version} not deployed: {entry.status}: {entry.reason}; {stays}")
    if ctx.deploy_mode == "skip":
        raise StageSkipped(f"{name} v{version} not deployed: the run asked deploy=skip; {stays}")

    urls = ctx.settings.serving_urls(name, ctx.model.config.serving.port, ctx.model.config.serving.replicas)
    golden = ctx.store.read_table(ctx.stage_result("evaluate")["golden_uri"])
    rollout = rollout_backend(ctx, urls, SmokeTest.from_golden(golden))
    backend = ctx.settings.deploy_backend
    ctx.log(f"deploy {name} v{version} ({backend}: {', '.join(urls)}) one replica at a time; production is v{current}")
    record = {"model": name, "version": version, "previous_version": current, "backend": backend, "replicas": urls}
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
