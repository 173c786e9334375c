"""deploy: load the blessed version on the model servers, confirm, then move the `production` alias."""

from __future__ import annotations

from keiko.errors import KeikoError, StageSkipped
from keiko.serving.client import ModelServerClient
from keiko.stages.context import StageContext


def run(ctx: StageContext) -> dict:
    name = ctx.model.name
    version = ctx.stage_result("register")["version"]
    entry = ctx.registry.get(name, version)
    current = ctx.registry.alias(name, "production")
    urls = ctx.settings.serving_urls(name, ctx.model.config.serving.port)
    if entry.status != "registered":
        raise StageSkipped(
            f"{name} v{version} not deployed: {entry.status}: {entry.reason}; production stays v{current}"
        )

    ctx.log(f"deploy {name} v{version} to {len(urls)} server(s): {', '.join(urls)} (production is v{current})")
    for url in urls:
        with ModelServerClient(url) as server:
            if server.version().get("version") == version:
                ctx.log(f"{url} already serves v{version}")
                continue
            server.load(version)
            status = server.wait_until_serving(version)
            ctx.log(f"{url} serves v{status['version']} (sha256 {status['artifact_sha256'][:12]}), ready")
    if current == version:
        ctx.log(f"v{version} was already production: nothing to move")
    else:
        try:
            ctx.registry.move_alias(name, version, expected=current, note=f"deploy run {ctx.run_id or 'cli'}")
        except KeikoError as exc:
            raise KeikoError(f"servers serve v{version} but the alias did not move: {exc}") from None
        ctx.log(f"production alias moved v{current} -> v{version}")
    return {"version": version, "previous_version": current, "servers": urls}
