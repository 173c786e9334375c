"""register: record the candidate with its lineage in the registry (idempotent on retries)."""

from __future__ import annotations

from keiko.stages.context import StageContext, code_version


def publish_artifact(ctx: StageContext, uri: str, sha256: str) -> str:
    """Copy the model to a content-addressed path that no rerun can overwrite.

    Run artifacts under {model}/{ds}/ are rewritten by every rerun of that day (possibly with new
    code or config); a registered version must keep pointing at exactly the bytes it was judged on.
    """
    published = f"{ctx.store.root_uri}/{ctx.model.name}/versions/{sha256}/{uri.rsplit('/', 1)[-1]}"
    if not ctx.store.exists(published):
        ctx.store.write_bytes(published, ctx.store.read_verified(uri, sha256))
    return published


def run(ctx: StageContext) -> dict:
    extracted, trained = ctx.stage_result("extract"), ctx.stage_result("train")
    evaluation = ctx.store.read_json(ctx.uri("evaluation.json"))
    artifact_uri = publish_artifact(ctx, trained["model_uri"], trained["model_sha256"])
    registration = ctx.registry.register(
        model=ctx.model.name,
        ds=ctx.ds.isoformat(),
        window_start=extracted["window_start"],
        window_end=extracted["window_end"],
        artifact_uri=artifact_uri,
        artifact_sha256=trained["model_sha256"],
        code_version=code_version(),
        config_sha256=ctx.model.config_sha256,
        features_sha256=ctx.model.features_sha256,
        algorithm=trained["algorithm"],
        metrics={
            "test": evaluation["candidate"],
            "production": evaluation["production"],
            "bayes_optimal_logloss": evaluation["bayes_optimal_logloss"],
            "decision": evaluation["decision"],
            "raw_rows": extracted["rows"],
            "raw_sha256": extracted["raw_sha256"],
        },
        run_id=ctx.run_id,
    )
    entry = registration.version
    verb = "registered" if registration.created else "already registered (same window and artifact sha256)"
    ctx.log(f"{ctx.model.name} v{entry.version} {verb}: {entry.artifact_uri} sha256 {entry.artifact_sha256[:12]}")
    return {"version": entry.version, "created": registration.created, "artifact_sha256": entry.artifact_sha256}
