"""register: record the candidate with its lineage in the registry (idempotent on retries)."""

from __future__ import annotations

from keiko.contract import (
    Blessing,
    EvaluateResult,
    Evaluation,
    ExtractResult,
    FeaturesResult,
    ModelLayout,
    RegisterResult,
    TrainResult,
    parse,
)
from keiko.errors import KeikoError, MissingDataError
from keiko.stages.context import StageContext, code_version
from keiko.storage import IntegrityError, sha256_bytes


def publish_artifact(ctx: StageContext, uri: str, sha256: str, version_key: str | None = None) -> str:
    """Copy an artifact to versions/{version_key or its sha256}/, a path that no rerun can overwrite.

    Run artifacts under {model}/{ds}/ are rewritten by every rerun of that day (possibly with new
    code or config); a registered version must keep pointing at exactly the bytes it was judged on.
    A copy named by its own sha256 (the model's) that was changed since is repaired or refused
    (repair_published); a copy named by the model's (its profile) is kept as the first register wrote it.
    """
    published = ModelLayout(ctx.store, ctx.model.name).published(version_key or sha256, uri.rsplit("/", 1)[-1])
    if not ctx.store.exists(published):
        ctx.store.write_bytes(published, ctx.store.read_verified(uri, sha256))
    elif version_key is None:
        repair_published(ctx, published, uri, sha256)
    return published


def repair_published(ctx: StageContext, published: str, uri: str, sha256: str) -> None:
    """Make the copy `published` have its `sha256` again, rewritten from the run's artifact `uri` when that
    has it; IntegrityError naming the file and the hashes when it does not. Never kept silently: every later
    reader (evaluate, deploy, the model servers) would refuse it, long after the change."""
    found = sha256_bytes(ctx.store.read_bytes(published))
    if found == sha256:
        return
    try:
        source = ctx.store.read_bytes(uri)
    except MissingDataError:
        source = None
    if source is None or sha256_bytes(source) != sha256:
        state = "is missing" if source is None else f"has sha256 {sha256_bytes(source)}"
        raise IntegrityError(
            f"{published} has sha256 {found}, not {sha256} (the sha256 it is stored and registered under); "
            f"it cannot be repaired from the run's {uri}, which {state}: restore the file, or rerun train and register"
        )
    ctx.store.write_bytes(published, source)
    ctx.log(f"repaired {published}: it had sha256 {found}; rewrote it from {uri} (sha256 {sha256})")


def read_blessing(ctx: StageContext, model_sha256: str, evaluation_bytes: bytes) -> Blessing:
    """gate_evaluation's verdict on exactly this candidate and evaluation; anything else is an error."""
    if not ctx.store.exists(ctx.layout.blessing):
        raise KeikoError(f"no blessing for {ctx.model.name} {ctx.ds}: gate_evaluation did not reach a verdict")
    blessing = ctx.layout.read(ctx.layout.blessing, Blessing)
    if blessing.model_sha256 != model_sha256 or blessing.evaluation_sha256 != sha256_bytes(evaluation_bytes):
        raise KeikoError("the blessing judged another candidate or evaluation: rerun evaluate and gate_evaluation")
    return blessing


def history_reason(ctx: StageContext, window_end: str) -> str | None:
    """Why this run's model must never be deployed (it is history), or None. `deploy=force` overrides."""
    if ctx.deploy_mode == "force":
        return None
    if ctx.run_type == "backfill":
        return "a backfill run: backfills never deploy"
    current = ctx.registry.alias(ctx.model.name, "production")
    if current is not None:
        production_end = ctx.registry.get(ctx.model.name, current).window_end
        if window_end < production_end:
            return f"its data window ends {window_end}, before production v{current}'s ({production_end})"
    return None


def run(ctx: StageContext) -> RegisterResult:
    extracted, trained = ctx.result(ExtractResult), ctx.result(TrainResult)
    evaluated = ctx.result(EvaluateResult)
    evaluation_bytes = ctx.store.read_bytes(evaluated.evaluation_uri)
    evaluation = parse(evaluation_bytes, Evaluation, evaluated.evaluation_uri)
    blessing = read_blessing(ctx, trained.model_sha256, evaluation_bytes)
    artifact_uri = publish_artifact(ctx, trained.model_uri, trained.model_sha256)
    features = ctx.result(FeaturesResult)
    profile_uri = publish_artifact(ctx, features.profile_uri, features.profile_sha256, trained.model_sha256)
    status = "registered" if blessing.blessed else "rejected"
    reason = "; ".join(blessing.reasons)
    if status == "registered" and (history := history_reason(ctx, extracted.window_end)):
        status, reason = "historical", history
    registration = ctx.registry.register(
        model=ctx.model.name,
        ds=ctx.ds.isoformat(),
        window_start=extracted.window_start,
        window_end=extracted.window_end,
        artifact_uri=artifact_uri,
        artifact_sha256=trained.model_sha256,
        code_version=code_version(),
        config_sha256=ctx.model.config_sha256,
        features_sha256=ctx.model.features_sha256,
        algorithm=trained.algorithm,
        metrics={
            "test": evaluation.candidate.model_dump(mode="json"),
            "production": evaluation.production.model_dump(mode="json") if evaluation.production else None,
            "bayes_optimal_logloss": evaluation.bayes_optimal_logloss,
            "calibration_to_truth": evaluation.candidate_calibration_to_truth,
            "blessing": blessing.model_dump(mode="json"),
            "profile_uri": profile_uri,
            "prediction_profile": evaluation.prediction_profile,
            "raw_rows": extracted.rows,
            "raw_sha256": extracted.raw_sha256,
        },
        status=status,
        reason=reason,
        run_id=ctx.run_id,
        trigger=ctx.trigger,
    )
    entry = registration.version
    verb = "registered" if registration.created else "already registered (same window and artifact sha256)"
    if entry.status != "registered":
        verb += f" as {entry.status.upper()} ({entry.reason})"
    ctx.log(f"{ctx.model.name} v{entry.version} {verb}: {entry.artifact_uri} sha256 {entry.artifact_sha256[:12]}")
    return RegisterResult(
        version=entry.version, status=entry.status, created=registration.created, artifact_sha256=entry.artifact_sha256
    )
