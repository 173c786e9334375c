"""register: record the candidate with its lineage in the registry (idempotent on retries)."""

from __future__ import annotations

from keiko.stages.context import StageContext, code_version


def run(ctx: StageContext) -> dict:
    extracted, trained = ctx.stage_result("extract"), ctx.stage_result("train")
    evaluation = ctx.store.read_json(ctx.uri("evaluation.json"))
    registration = ctx.registry.register(
        model=ctx.model.name,
        ds=ctx.ds.isoformat(),
        window_start=extracted["window_start"],
        window_end=extracted["window_end"],
        artifact_uri=trained["model_uri"],
        artifact_sha256=trained["model_sha256"],
        code_version=code_version(),
        config_sha256=ctx.model.config_sha256,
        features_sha256=ctx.model.features_sha256,
        algorithm=trained["algorithm"],
        metrics={
            "test": evaluation["candidate"],
            "production": evaluation["production"],
            "bayes_optimal_logloss": evaluation["bayes_optimal_logloss"],
            "comparison": evaluation["comparison"],
            "raw_rows": extracted["rows"],
            "raw_sha256": extracted["raw_sha256"],
        },
        run_id=ctx.run_id,
    )
    entry = registration.version
    verb = "registered" if registration.created else "already registered (same window and artifact sha256)"
    ctx.log(f"{ctx.model.name} v{entry.version} {verb}: {entry.artifact_uri} sha256 {entry.artifact_sha256[:12]}")
    return {"version": entry.version, "created": registration.created, "artifact_sha256": entry.artifact_sha256}
