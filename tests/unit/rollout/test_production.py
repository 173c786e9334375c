"""The production path (keiko.rollout.production): the one way production changes, under the model's lease.

The servers are a fake backend here (the real ones: test_local_rollout.py, test_kubernetes_rollout.py, and
tests/integration/test_production_races.py with separate processes): these tests are about what happens
around them, the lease, the compare-and-set and the record.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from keiko.errors import KeikoError, LeaseHeld
from keiko.modeldef import load_model
from keiko.resources import Resources
from keiko.rollout import Rollout, RolloutEvent, RolloutFailed, SmokeTest
from keiko.rollout import production as production_path
from keiko.rollout.production import Change, ProductionChangeFailed, ProductionPath
from keiko.serving.split import TrafficSplit


class FakeServers(Rollout):
    """Servers that serve whatever they were last moved to; `during` runs in the middle of a rollout."""

    def __init__(self, serving: int | None, *, fail: bool = False, during=None, **kwargs) -> None:
        super().__init__(**kwargs)
        self.serving, self.fail, self.during = serving, fail, during
        self.split_now: TrafficSplit | None = None

    def canary(self) -> int | None:
        return self.split_now.version if self.split_now else None

    def split(self, split: TrafficSplit, stable: int) -> list[RolloutEvent]:
        self.guard()
        self.split_now = split
        self._record("http://a", "canary", split.version, f"{split.weight:.0%}")
        return self.events

    def run(self, version: int, previous: int | None) -> list[RolloutEvent]:
        self.guard()
        if self.during:
            self.during()
        self.guard()
        if self.fail:
            self._record("http://a", "failed", version, "load refused")
            raise RolloutFailed(f"rollout of v{version} failed on http://a", events=self.events, rolled_back=True)
        self.serving, self.split_now = version, None
        self._record("http://a", "ready", version)
        return self.events

    def roll_back(self, previous: int | None) -> bool:
        return True


@pytest.fixture
def world(tmp_path, monkeypatch):
    """ctr v1..v3 registered, v4 rejected; production v1; the fake servers serving it."""
    monkeypatch.setenv("KEIKO_HOME", str(tmp_path))
    monkeypatch.setenv("KEIKO_SERVING_URLS_CTR", "http://a")
    monkeypatch.setenv("KEIKO_LEASE_WAIT_SECONDS", "0.6")
    resources = Resources()
    for i, status in enumerate(("registered", "registered", "registered", "rejected")):
        resources.registry.register(
            model="ctr", ds="2026-11-21", window_start=f"2026-11-1{i}", window_end="2026-11-21",
            artifact_uri="file:///m.npz", artifact_sha256=f"{i}", code_version="0", config_sha256="c",
            features_sha256="f", algorithm="hashed_logistic_regression", metrics={}, status=status,
        )  # fmt: skip
    resources.registry.move_alias("ctr", 1)
    servers = FakeServers(1)

    def backend(_resources, _model, _urls, _smoke, *, log, guard):
        servers.log, servers.guard, servers.events = log, guard, []
        return servers

    monkeypatch.setattr(production_path, "open_backend", backend)
    path = ProductionPath(model=load_model("ctr"), resources=resources, log=lambda _: None)
    return path, servers, resources.registry


def change(tmp_path: Path, version: int, expected: int | None, action: str = "deploy") -> Change:
    return Change(
        action=action, version=version, expected=expected, smoke=SmokeTest([], []), requested_by=f"test {action}",
        reason="test", note=f"test {action} to v{version}", record_uri=(tmp_path / "change.json").as_uri(),
    )  # fmt: skip


def record(tmp_path: Path) -> dict:
    return json.loads((tmp_path / "change.json").read_text())


def test_a_change_moves_the_servers_then_the_alias_and_records_it(world, tmp_path):
    path, servers, registry = world
    done = path.change(change(tmp_path, 2, expected=1))
    assert (servers.serving, registry.alias("ctr")) == (2, 2)
    assert done.message == "v2 serves on 1 replica(s); production alias moved v1 -> v2"
    assert record(tmp_path)["success"] and record(tmp_path)["requested_by"].startswith("test deploy (pid ")
    assert [e["event"] for e in record(tmp_path)["events"]] == ["ready"]
    assert registry.current_lease("ctr") is None  # released


def test_production_moved_since_the_caller_looked_is_refused_before_any_server_moves(world, tmp_path):
    path, servers, registry = world
    registry.move_alias("ctr", 3, note="keiko rollback by oncall")
    with pytest.raises(KeikoError) as refused:
        path.change(change(tmp_path, 2, expected=1))
    assert "ctr production moved from v1 to v3 (keiko rollback by oncall, at " in str(refused.value)
    assert str(refused.value).endswith("since this deploy looked: v2 not put into production, nothing changed")
    assert servers.serving == 1 and registry.alias("ctr") == 3 and not (tmp_path / "change.json").exists()


def test_a_version_that_may_not_serve_is_refused_before_the_lease(world, tmp_path):
    path, _servers, registry = world
    with pytest.raises(KeikoError, match="ctr v4 is rejected: only a registered version may serve"):
        path.change(change(tmp_path, 4, expected=1))
    assert registry.current_lease("ctr") is None


def test_a_failed_rollout_leaves_the_alias_and_says_what_stays(world, tmp_path):
    path, servers, registry = world
    servers.fail = True
    with pytest.raises(ProductionChangeFailed) as failed:
        path.change(change(tmp_path, 2, expected=1, action="rollback"))
    assert str(failed.value) == "rollback of ctr to v2 failed, production stays v1: rollout of v2 failed on http://a"
    assert registry.alias("ctr") == 1
    assert (record(tmp_path)["success"], record(tmp_path)["rolled_back"], record(tmp_path)["alias_moved"]) == (
        False,
        True,
        False,
    )


def test_a_holder_that_lost_its_lease_mid_rollout_does_not_move_the_alias(world, tmp_path):
    path, servers, registry = world

    def lease_taken_over() -> None:  # the holder paused past its lease, and another change took it
        lease = registry.current_lease("ctr")
        registry.release_lease(lease)
        registry.acquire_lease("ctr", "keiko rollback ctr by oncall", seconds=60)

    # Taken well within the lease's length: the holder's own clock says it still holds it, so only the
    # registry's fence on the alias move can stop it.
    servers.during = lease_taken_over
    with pytest.raises(ProductionChangeFailed) as failed:
        path.change(change(tmp_path, 2, expected=1))
    assert "lost the production lease mid-change" in str(failed.value)
    assert registry.alias("ctr") == 1 and len(registry.history("ctr")) == 1
    assert registry.current_lease("ctr").holder == "keiko rollback ctr by oncall"


def test_another_change_in_progress_is_waited_for_then_named(world, tmp_path):
    path, servers, registry = world
    registry.acquire_lease("ctr", "deploy of ctr v3 for run scheduled__1", seconds=60)
    with pytest.raises(
        LeaseHeld, match=r"being changed by deploy of ctr v3 for run scheduled__1, since .*waiting 0.6s"
    ):
        path.change(change(tmp_path, 2, expected=1))
    assert servers.serving == 1 and registry.alias("ctr") == 1


def canary_change(tmp_path: Path, version: int, weight: float, expected_canary: int | None) -> Change:
    return Change(
        action="canary", version=version, expected=1, smoke=SmokeTest([], []), requested_by="test canary",
        reason="test", note="test canary", record_uri=(tmp_path / "change.json").as_uri(),
        split=TrafficSplit(version, weight, "salt"), expected_canary=expected_canary,
    )  # fmt: skip


def test_a_canary_change_splits_the_servers_and_leaves_the_alias(world, tmp_path):
    path, servers, registry = world
    written = path.change(canary_change(tmp_path, 2, 0.1, None))
    assert servers.split_now == TrafficSplit(2, 0.1, "salt") and servers.serving == 1
    assert registry.alias("ctr") == 1 and not written.alias_moved and written.canary_weight == 0.1
    assert written.message == "v2 canary at 10% (salt salt) on 1 replica(s); production stays v1"
    path.change(canary_change(tmp_path, 2, 0.5, 2))  # the next step expects the canary it saw
    assert servers.split_now.weight == 0.5


def test_a_canary_step_after_its_canary_was_ended_is_refused_and_changes_nothing(world, tmp_path):
    path, servers, registry = world
    path.change(canary_change(tmp_path, 2, 0.1, None))
    path.change(change(tmp_path, 1, 1, "rollback"))  # `keiko rollback` meanwhile: every user back on v1
    assert servers.split_now is None and servers.serving == 1
    with pytest.raises(KeikoError, match="serve no canary, where this change expected canary v2"):
        path.change(canary_change(tmp_path, 2, 0.5, 2))
    assert servers.split_now is None and registry.alias("ctr") == 1


def test_a_canary_needs_a_stable_version_and_says_what_it_expects():
    with pytest.raises(ValueError, match="names the canary it expects"):
        Change(
            action="canary", version=2, expected=1, smoke=SmokeTest([], []), requested_by="t", reason="t", note="t",
            record_uri="file:///x", split=TrafficSplit(2, 0.1, "s"),
        )  # fmt: skip
    with pytest.raises(ValueError, match="carries its split"):
        Change(
            action="deploy", version=2, expected=1, smoke=SmokeTest([], []), requested_by="t", reason="t", note="t",
            record_uri="file:///x", split=TrafficSplit(2, 0.1, "s"),
        )  # fmt: skip
