"""The production path: the only code that changes what a model serves.

`ProductionPath.change(Change(...))` puts version V into production, or, with V the version before,
takes the current one out. The deploy stage, the `rollback` task after a failed gate_serving and
`keiko rollback` all call it. In order:

1. takes the model's production lease (keiko.rollout.lease), waiting up to KEIKO_LEASE_WAIT_SECONDS while
   another change holds it, then failing with one line naming the holder; two changes of one model never
   interleave;
2. under the lease, refuses (touching nothing) when production is no longer what the caller decided on;
3. moves the servers to V through the backend of KEIKO_DEPLOY_BACKEND (local replicas one at a time, or
   the Kubernetes Deployment), each server checked with known answers; any failure puts the moved ones
   back, and a lost lease stops it touching anything;
4. moves the `production` alias by compare-and-set, fenced by the lease (a holder whose lease expired
   mid-change cannot move it);
5. writes the change's record (keiko.contract.ProductionChange), whatever happened once servers were
   touched, and releases the lease.

Checks never come here: gate_serving only reports, and the DAG's `rollback` task reverts.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property
from typing import Literal

from keiko.config import DEPLOY_BACKENDS
from keiko.contract import ProductionChange
from keiko.errors import KeikoError, LeaseLost
from keiko.modeldef import ModelDefinition
from keiko.registry import Lease
from keiko.resources import Resources
from keiko.rollout import Rollout, RolloutFailed, SmokeTest
from keiko.rollout import lease as leases
from keiko.serving.split import TrafficSplit


def version_name(version: int | None) -> str:
    """How logs name a version of production: `v3`, or `none` before the first deploy."""
    return "none" if version is None else f"v{version}"


class ProductionChangeFailed(KeikoError):
    """Servers were touched and the change did not complete; `record` says how far it got. `retryable` when the
    cause was infrastructure (a server down, the lease lost, the registry's write): a retry may complete it."""

    def __init__(self, message: str, record: ProductionChange, retryable: bool = False) -> None:
        super().__init__(message)
        self.record = record
        self.retryable = retryable


ANY = "any"


@dataclass(frozen=True, kw_only=True)
class Change:
    """`action` canary: `split.version` serves beside production (`expected`, which stays production) to the split's
    share of the users; the alias does not move. deploy and rollback end any canary: every user on `version`."""

    action: Literal["deploy", "rollback", "canary"]
    version: int  # what production should serve (canary: the canary's version)
    expected: int | None  # what production served when the caller decided (None: nothing yet)
    smoke: SmokeTest  # the known answers each server must give as `version`
    requested_by: str  # the lease holder, in words: which run or command
    reason: str  # why, for the record
    note: str  # for the alias's history
    record_uri: str  # where the record goes
    split: TrafficSplit | None = None  # a canary's split (action canary only)
    # The canary version the caller saw serving (None: none), checked on the servers under the lease, so that a step
    # never re-splits or promotes what `keiko rollback` or the rollback task sent back to stable. ANY: not checked
    # (a rollback ends whatever canary serves); a canary change must say.
    expected_canary: int | Literal["any"] | None = ANY

    def __post_init__(self) -> None:
        if (self.action == "canary") != (self.split is not None) or (self.split and self.split.version != self.version):
            raise ValueError("a canary change carries its split of `version`; other changes none")
        if self.split and self.expected_canary == ANY:
            raise ValueError("a canary change names the canary it expects serving (None: none)")


def open_backend(
    resources: Resources,
    model: ModelDefinition,
    urls: list[str],
    smoke: SmokeTest,
    *,
    log: Callable[[str], None],
    guard: Callable[[], None],
) -> Rollout:
    """The rollout backend KEIKO_DEPLOY_BACKEND names; a batch model's is its batch store's pointer, wherever its
    servers run."""
    config = resources.settings
    if model.config.serving.batch is not None:
        from keiko.rollout.batch import BatchRollout

        return BatchRollout(
            model=model.name,
            key=model.config.serving.batch.key,
            store=resources.batch_store,
            artifacts=resources.store,
            log=log,
            guard=guard,
        )
    if config.deploy_backend == "kubernetes":
        from keiko.rollout.kubernetes import KubernetesRollout

        return KubernetesRollout(
            model=model.name,
            deployment=config.server_deployment(model.name),
            namespace=config.kubernetes_namespace,
            conn_id=config.kubernetes_conn_id,
            log=log,
            guard=guard,
        )
    if config.deploy_backend == "local":
        from keiko.rollout.local import LocalRollout

        return LocalRollout(model=model.name, urls=urls, smoke=smoke, log=log, guard=guard)
    raise KeikoError(f"KEIKO_DEPLOY_BACKEND={config.deploy_backend!r}: expected one of {', '.join(DEPLOY_BACKENDS)}")


class ProductionPath:
    """Changes of one model's production. No I/O until `change` is called."""

    def __init__(self, *, model: ModelDefinition, resources: Resources, log: Callable[[str], None] = print) -> None:
        self.model = model
        self.resources = resources
        self.log = log

    @cached_property
    def urls(self) -> list[str]:
        """The model's servers: the replicas, or the Kubernetes Service that gate_serving probes."""
        serving = self.model.config.serving
        return self.resources.settings.serving_urls(self.model.name, serving.port, serving.replicas)

    def change(self, change: Change) -> ProductionChange:
        """Make `change.version` production; the record written. KeikoError (LeaseHeld: another change holds
        the model) when refused before anything moved; ProductionChangeFailed once servers were touched."""
        name, registry, config = self.model.name, self.resources.registry, self.resources.settings
        target = registry.get(name, change.version)
        if target.status != "registered":
            raise KeikoError(f"{name} v{target.version} is {target.status}: only a registered version may serve")
        holder = f"{change.requested_by} ({leases.process_identity()})"
        with leases.hold(
            registry, name, holder, seconds=config.lease_seconds, wait=config.lease_wait_seconds, log=self.log
        ) as held:
            current = registry.alias(name)
            allowed = (change.expected,) if change.split else (change.expected, change.version)
            if current not in allowed:
                raise KeikoError(self._moved(change, current, held.waited_for))
            if change.split and current is None:
                raise KeikoError(f"{name} has no production version: a canary needs a stable version beside it")
            return self._move(change, current, held)

    def _canary_moved(self, change: Change, serving: int | None) -> str:
        def name(v: int | None) -> str:
            return "no canary" if v is None else f"canary v{v}"

        return (
            f"{self.model.name}'s servers serve {name(serving)}, where this change expected "
            f"{name(change.expected_canary)} "
            f"(ended since by another change of production: keiko status): this {change.action} of v{change.version} "
            "not applied, nothing changed"
        )

    def _moved(self, change: Change, current: int | None, waited_for: Lease | None) -> str:
        """Why a change that found production elsewhere than its caller saw it refuses."""
        history = self.resources.registry.history(self.model.name)
        how = f" ({history[-1]['note'] or 'no note'}, at {history[-1]['at']})" if history else ""
        when = (
            f"while this {change.action} waited for {waited_for.holder}"
            if waited_for
            else f"since this {change.action} looked"
        )
        expected = f"v{change.expected}" if change.expected is not None else "none"
        return (
            f"{self.model.name} production moved from {expected} to v{current}{how} {when}: "
            f"v{change.version} not put into production, nothing changed"
        )

    def _move(self, change: Change, current: int | None, held: leases.HeldLease) -> ProductionChange:
        name, registry = self.model.name, self.resources.registry
        started = dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds")
        backend = open_backend(self.resources, self.model, self.urls, change.smoke, log=self.log, guard=held.check)

        def record(success: bool, message: str, *, rolled_back: bool, alias_moved: bool) -> ProductionChange:
            written = ProductionChange(
                model=name,
                action=change.action,
                from_version=current,
                to_version=change.version,
                reason=change.reason,
                requested_by=held.lease.holder,
                backend=self.resources.settings.deploy_backend,
                replicas=self.urls,
                started_at=started,
                finished_at=dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds"),
                success=success,
                message=message,
                rolled_back=rolled_back,
                alias_moved=alias_moved,
                events=backend.events,
                record_uri=change.record_uri,
                canary_weight=change.split.weight if change.split else None,
            )
            self.resources.store.write_json(change.record_uri, written.model_dump(mode="json"))
            return written

        stays = f"production stays v{current}" if current is not None else "there is still no production version"

        def fail(detail: str, *, rolled_back: bool, retryable: bool = True) -> ProductionChangeFailed:
            message = f"{change.action} of {name} to v{change.version} failed, {stays}: {detail}"
            written = record(False, message, rolled_back=rolled_back, alias_moved=False)
            return ProductionChangeFailed(message, written, retryable=retryable)

        if change.expected_canary != ANY:
            serving = backend.canary()
            if serving != change.expected_canary:
                raise KeikoError(self._canary_moved(change, serving))
        try:
            if change.split:
                backend.split(change.split, current)
            else:
                backend.run(change.version, current)
        except RolloutFailed as exc:
            raise fail(str(exc), rolled_back=exc.rolled_back, retryable=exc.retryable) from None
        except LeaseLost as exc:
            raise fail(self._lost(exc), rolled_back=False) from None
        if change.split:
            message = f"{change.split.describe()} on {len(self.urls)} replica(s); production stays v{current}"
            return record(True, message, rolled_back=False, alias_moved=False)
        if current == change.version:
            message = f"v{change.version} was already production: nothing to move"
            return record(True, message, rolled_back=False, alias_moved=False)
        try:
            registry.move_alias(name, change.version, expected=current, note=change.note, lease=held.lease)
        except LeaseLost as exc:
            raise fail(self._lost(exc), rolled_back=False) from None
        except KeikoError as exc:
            raise fail(f"replicas serve v{change.version} but the production alias did not move: {exc}",
                       rolled_back=False) from None  # fmt: skip
        moved, where = f"{version_name(current)} -> v{change.version}", backend.serving_where(len(self.urls))
        if change.action == "rollback":
            message = f"rolled back {name}: production {moved} on {where}"
        else:
            message = f"v{change.version} serves on {where}; production alias moved {moved}"
        return record(True, message, rolled_back=False, alias_moved=True)

    def _lost(self, exc: LeaseLost) -> str:
        return (
            f"lost the production lease mid-change ({exc}): the alias did not move and the replicas were left to "
            "the lease's new holder"
        )
