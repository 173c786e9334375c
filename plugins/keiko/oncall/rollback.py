"""`keiko rollback <model> [--to VERSION] [--reason TEXT]`: put the serving replicas back on an earlier
version with the deploy stage's rolling machinery, then move the `production` alias to it.

Everything that can be refused is refused before a replica is touched: no production yet, a target that
is production already, does not exist, is not `registered` (rejected, historical), or whose artifact does
not match its registry sha256. Each replica's smoke test is the target's own known answers: rows of its
run's test day scored offline by its verified artifact, as evaluate scores them. A replica that fails
makes the rollout put the moved ones back (Rollout.run), and the alias stays. Every attempt is recorded in
`{artifact_root}/{model}/rollbacks/<UTC time>.json` with its per-replica events.
"""

from __future__ import annotations

import datetime as dt
import getpass
from typing import Any

import pyarrow as pa

from keiko.errors import KeikoError
from keiko.registry import ModelVersion, Registry
from keiko.rollout import SMOKE_ROWS, RolloutFailed, SmokeTest, json_rows
from keiko.stages.context import StageContext
from keiko.stages.deploy import rollout_backend

NOTE = "rollback by"  # how the alias history notes this command's moves


def choose_target(registry: Registry, model: str, requested: int | None) -> tuple[int, ModelVersion]:
    """(production now, the version to roll back to); KeikoError saying why when there is none to take."""
    current = registry.alias(model)
    if current is None:
        raise KeikoError(f"{model} has no production version yet: nothing to roll back")
    number = requested if requested is not None else registry.previous(model)
    if number is None:
        raise KeikoError(
            f"{model} production v{current} is its first: no previous version; name one with --to "
            f"(registered: {_registered(registry, model)})"
        )
    if requested is None and number > current:
        # `previous` is what the last move replaced: after any rollback (this command's, gate_serving's),
        # the newer version just taken out of service.
        raise KeikoError(
            f"{model} production went back from v{number} to v{current} in its last move: rolling back again "
            f"would redeploy v{number}; name the version with --to (registered: {_registered(registry, model)})"
        )
    if number == current:
        raise KeikoError(f"{model} v{current} is production already: nothing to roll back")
    try:
        target = registry.get(model, number)
    except KeikoError as exc:
        raise KeikoError(f"{exc}; registered: {_registered(registry, model)}") from None
    if target.status != "registered":
        raise KeikoError(
            f"{model} v{number} is {target.status} ({target.reason}): only a registered version may serve; "
            f"registered: {_registered(registry, model)}"
        )
    return current, target


def _registered(registry: Registry, model: str) -> str:
    return ", ".join(f"v{v.version}" for v in registry.list(model) if v.status == "registered") or "none"


def known_rows(ctx: StageContext, target: ModelVersion, production: ModelVersion) -> pa.Table:
    """Request rows for the smoke test: the golden rows of the target's run day (its test day), else of
    production's (that day's artifacts may have been cleaned up)."""
    for ds in dict.fromkeys((target.ds, production.ds)):
        uri = ctx.store.uri(ctx.model.name, ds, "golden.parquet")
        if ctx.store.exists(uri):
            golden = ctx.store.read_table(uri).slice(0, SMOKE_ROWS)
            return golden.drop_columns([c for c in ("expected_prediction",) if c in golden.column_names])
    raise KeikoError(
        f"no golden rows to smoke-test v{target.version} with: neither {target.ds} nor {production.ds} "
        f"has {ctx.model.name}/<ds>/golden.parquet"
    )


def known_answers(ctx: StageContext, target: ModelVersion, rows: pa.Table) -> SmokeTest:
    """`rows` and the target's offline predictions for them: its verified artifact, its own feature
    parameters, the batch feature path (evaluate's production_predictions does the same)."""
    from keiko.algorithms import load_model_bytes
    from keiko.columns import from_arrow

    data = ctx.store.read_verified(target.artifact_uri, target.artifact_sha256)
    try:
        model = load_model_bytes(data)
    except Exception as exc:  # any loader's error: the artifact is unusable, say so before touching replicas
        raise KeikoError(f"{ctx.model.name} v{target.version}'s artifact does not load: {exc}") from None
    features = ctx.model.features.transform(from_arrow(rows, ctx.model.features.INPUT_SCHEMA), **model.feature_params)
    return SmokeTest(json_rows(rows), [float(p) for p in model.predict(features)])


def requested_by() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # a container user without a passwd entry or LOGNAME
        return "unknown"


def roll_back(ctx: StageContext, requested: int | None, reason: str) -> dict[str, Any]:
    """Roll `ctx.model` back; the record written. RolloutFailed's and the alias's failures are KeikoErrors
    naming what stays in production."""
    name = ctx.model.name
    current, target = choose_target(ctx.registry, name, requested)
    smoke = known_answers(ctx, target, known_rows(ctx, target, ctx.registry.get(name, current)))
    serving = ctx.model.config.serving
    urls = ctx.settings.serving_urls(name, serving.port, serving.replicas)
    rollout = rollout_backend(ctx, urls, smoke)
    started = dt.datetime.now(dt.UTC)
    by = requested_by()
    record: dict[str, Any] = {
        "model": name,
        "from_version": current,
        "to_version": target.version,
        "reason": reason,
        "requested_by": by,
        "backend": ctx.settings.deploy_backend,
        "replicas": urls,
        "started_at": started.isoformat(timespec="milliseconds"),
    }
    uri = f"{ctx.store.root_uri}/{name}/rollbacks/{started.strftime('%Y-%m-%dT%H%M%S.%fZ')}.json"

    def finish(success: bool, message: str, **extra: Any) -> None:
        finished = dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds")
        record.update(success=success, message=message, finished_at=finished, record_uri=uri, **extra)
        record["events"] = [e.to_dict() for e in rollout.events]
        ctx.store.write_json(uri, record)

    ctx.log(
        f"roll back {name} v{current} -> v{target.version} ({record['backend']}: {', '.join(urls)}) "
        f"one replica at a time" + (f"; reason: {reason}" if reason else "")
    )
    try:
        rollout.run(target.version, current)
    except RolloutFailed as exc:
        message = f"rollback of {name} to v{target.version} failed, production stays v{current}: {exc}"
        finish(False, message, rolled_back=exc.rolled_back, alias_moved=False)
        raise KeikoError(f"{message}; record: {uri}") from None
    note = f"{NOTE} {by}" + (f": {reason}" if reason else "")
    try:
        ctx.registry.move_alias(name, target.version, expected=current, note=note)
    except KeikoError as exc:
        message = f"replicas serve v{target.version} but the production alias did not move: {exc}"
        finish(False, message, alias_moved=False)
        raise KeikoError(f"{message}; record: {uri}") from None
    message = f"rolled back {name}: production v{current} -> v{target.version} on {len(urls)} replica(s)"
    finish(True, message, alias_moved=True)
    return record


def rollback(model: str, to: int | None, reason: str) -> str:
    """What `keiko rollback` prints last (the per-replica steps are logged as they happen)."""
    ctx = StageContext.create(model, dt.datetime.now(dt.UTC).date())  # no run day: the resources only
    record = roll_back(ctx, to, reason)
    return f"{record['message']}; record: {record['record_uri']}"
