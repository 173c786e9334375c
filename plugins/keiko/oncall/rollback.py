"""`keiko rollback <model> [--to VERSION] [--reason TEXT]`: put production back on an earlier version
through the production path (keiko.rollout.production): the replicas one at a time, then the alias.

Everything that can be refused is refused before a replica is touched: no production yet, a target that
is production already, does not exist, is not `registered` (rejected, historical), or whose artifact does
not match its registry sha256; and, once the model's production lease is taken, production having moved
since the target was chosen. Each replica's smoke test is the target's own known answers
(keiko.rollout.known_answers). A replica that fails makes the rollout put the moved ones back, and the
alias stays. Every attempt that touched a replica is recorded under the model's rollback records
(keiko.contract.ModelLayout.rollback_record) with its per-replica events.

During a canary (or A/B experiment) the default is not the version before production: it is ending the canary,
every user back on production, which a canary never moved (a rollback change to production itself: the backend ends
the split; the alias stays). That is the case when the model's CanaryPointer names a running CanaryRecord, or any
server reports a canary. `--to` production does the same; `--to` another version keeps the rollback above, which
ends any canary too. The canary stage's next analysis then finds no canary on the servers and fails in one line; the
stage owns the CanaryRecord, this command never writes it.
"""

from __future__ import annotations

import datetime as dt
import getpass
from dataclasses import dataclass

from keiko.contract import ModelLayout
from keiko.errors import KeikoError
from keiko.modeldef import load_model
from keiko.oncall.status import latest_canary, probe_servers
from keiko.registry import ModelVersion, Registry
from keiko.resources import Resources
from keiko.rollout import SmokeTest
from keiko.rollout.known_answers import golden_rows, known_answers
from keiko.rollout.production import Change, ProductionChangeFailed, ProductionPath

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


def requested_by() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # a container user without a passwd entry or LOGNAME
        return "unknown"


@dataclass(frozen=True)
class RunningCanary:
    version: int
    days: list[str]  # the rollout's run day, whose golden rows may smoke-test production too
    on_servers: bool  # a server reported it; else only its record says it runs (ended since by another change)


def canary_to_end(resources: Resources, model: str, urls: list[str]) -> RunningCanary | None:
    """The canary to end, when one runs: the model's CanaryPointer names a running CanaryRecord, or a server reports
    a canary (started outside a run, or its record lost); None otherwise."""
    pointer, record, _error = latest_canary(resources.store, model)  # unreadable: the servers say
    days = [pointer.ds] if pointer else []
    serving = next((s.canary["version"] for s in probe_servers(urls) if s.canary), None)
    if serving is not None:
        return RunningCanary(serving, days, on_servers=True)
    if record is not None and record.running:
        return RunningCanary(record.version, days, on_servers=False)
    return None


def smoke_test(resources: Resources, path: ProductionPath, target: ModelVersion, days) -> SmokeTest:
    """`target`'s own known answers on the golden rows of the first of `days` that has them (refused before anything
    is touched when its artifact does not load or match its sha256)."""
    return known_answers(resources.store, path.model, target, golden_rows(resources.store, target.model, days))


def move(
    path: ProductionPath, resources: Resources, target: ModelVersion, expected: int, smoke: SmokeTest, reason: str,
    note: str,
) -> tuple[str, str]:  # fmt: skip
    """Production onto `target` through the production path; (the change's message, its record's URI)."""
    model = target.model
    record_uri = ModelLayout(resources.store, model).rollback_record(dt.datetime.now(dt.UTC))
    by = requested_by()
    try:
        change = path.change(
            Change(
                action="rollback",
                version=target.version,
                expected=expected,
                smoke=smoke,
                requested_by=f"`keiko rollback {model}` by {by}",
                reason=reason,
                note=f"{NOTE} {by}: {note}" if note else f"{NOTE} {by}",
                record_uri=record_uri,
            )
        )
    except ProductionChangeFailed as exc:
        raise KeikoError(f"{exc}; record: {record_uri}") from None
    return change.message, record_uri


def end_canary(resources: Resources, path: ProductionPath, running: RunningCanary, reason: str) -> str:
    """Every user back on production through the production path: a rollback change to production itself."""
    model, canary = path.model.name, running.version
    current = resources.registry.alias(model)
    if current is None:
        raise KeikoError(f"{model} has no production version yet: a canary of v{canary} has no stable to go back to")
    production = resources.registry.get(model, current)
    smoke = smoke_test(resources, path, production, [production.ds, *running.days])
    print(
        f"end the canary of {model} v{canary}: every user back on production v{current} "
        f"({resources.settings.deploy_backend}: {', '.join(path.urls)})" + (f"; reason: {reason}" if reason else ""),
        flush=True,
    )
    note = f"ended the canary of v{canary}" + (f": {reason}" if reason else "")
    _, record_uri = move(path, resources, production, current, smoke, reason or f"end the canary of v{canary}", note)
    done = (
        f"ended the canary of v{canary}"
        if running.on_servers
        else f"no server carried the canary of v{canary} any more (its record still says running)"
    )
    return f"{done}: every user on v{current} on {len(path.urls)} replica(s); record: {record_uri}"


def rollback(model: str, to: int | None, reason: str) -> str:
    """Roll `model` back, or end its canary; what `keiko rollback` prints last (the per-replica steps are logged
    as they happen). Refusals, and failures naming what stays in production, are KeikoErrors."""
    definition, resources = load_model(model), Resources()
    registry = resources.registry
    path = ProductionPath(model=definition, resources=resources)
    if (to is None or to == registry.alias(model)) and (canary := canary_to_end(resources, model, path.urls)):
        return end_canary(resources, path, canary, reason)
    current, target = choose_target(registry, model, to)
    smoke = smoke_test(resources, path, target, (target.ds, registry.get(model, current).ds))
    print(
        f"roll back {model} v{current} -> v{target.version} ({resources.settings.deploy_backend}: "
        f"{', '.join(path.urls)}) one replica at a time" + (f"; reason: {reason}" if reason else ""),
        flush=True,
    )
    message, record_uri = move(path, resources, target, current, smoke, reason, reason)
    return f"{message}; record: {record_uri}"
