"""Holding a model's production lease for one change: waiting for another holder, renewing, noticing a lapse."""

from __future__ import annotations

import threading
import time

import pytest

from keiko.errors import LeaseHeld, LeaseLost
from keiko.registry.sql import SqlRegistry
from keiko.rollout import lease as leases


@pytest.fixture
def registry(tmp_path) -> SqlRegistry:
    return SqlRegistry(f"sqlite:///{tmp_path / 'registry.db'}")


def test_a_change_waits_up_to_its_bound_then_names_the_holder(registry):
    registry.acquire_lease("ctr", "deploy of ctr v3 for run scheduled__2026-11-21", seconds=30)
    said: list[str] = []
    with (
        pytest.raises(LeaseHeld) as held,
        leases.hold(registry, "ctr", "rollback", seconds=30, wait=1, log=said.append),
    ):
        pytest.fail("the lease was held: the block must not run")
    message = str(held.value)
    assert message.startswith("ctr's production is being changed by deploy of ctr v3 for run scheduled__2026-11-21")
    assert message.endswith("gave up after waiting 1s (KEIKO_LEASE_WAIT_SECONDS); nothing was changed")
    assert said == [f"waiting up to 1s for ctr's production lease, held by {held.value.lease.describe()}"]


def test_a_change_proceeds_once_the_holder_is_done(registry):
    first = registry.acquire_lease("ctr", "deploy of ctr v3", seconds=30)
    threading.Timer(0.5, registry.release_lease, [first]).start()
    with leases.hold(registry, "ctr", "rollback", seconds=30, wait=10, log=lambda _: None) as held:
        assert held.waited_for == first  # what a change that finds production moved names
        assert registry.current_lease("ctr").holder == "rollback"
    assert registry.current_lease("ctr") is None  # released at the end


def test_the_lease_is_renewed_while_the_change_runs(registry, registry_clock, monkeypatch):
    renewals = threading.Semaphore(0)
    renew = registry.renew_lease

    def renew_then_let_time_pass(lease, seconds):
        renewed = renew(lease, seconds)
        registry_clock.advance(0.25)  # the registry's time: the change runs on between renewals
        renewals.release()
        return renewed

    monkeypatch.setattr(registry, "renew_lease", renew_then_let_time_pass)
    with leases.hold(registry, "ctr", "a slow rollout", seconds=0.6, wait=1, log=lambda _: None) as held:
        for _ in range(3):  # 0.75 s of registry time: past the first lease's 0.6 s
            assert renewals.acquire(timeout=60), "the holder stopped renewing its lease"
        held.check()
        assert registry.current_lease("ctr").token == held.lease.token
        with pytest.raises(LeaseHeld):
            registry.acquire_lease("ctr", "another change", seconds=30)


def test_a_holder_paused_past_its_lease_knows_it(registry):
    lease = registry.acquire_lease("ctr", "a deploy", seconds=0.3)
    held = leases.HeldLease(registry, lease, 0.3, log=lambda _: None)  # never renewed: as if paused
    held.check()
    time.sleep(0.4)
    with pytest.raises(LeaseLost, match="lapsed"):
        held.check()


def test_a_taken_lease_stops_the_renewals_and_is_reported(registry):
    said: list[str] = []
    reported = threading.Event()

    def log(line: str) -> None:
        said.append(line)
        if line.startswith("lease lost: "):
            reported.set()

    with leases.hold(registry, "ctr", "a deploy", seconds=0.6, wait=1, log=log) as held:
        registry.release_lease(held.lease)  # as if it expired ...
        registry.acquire_lease("ctr", "keiko rollback ctr by oncall", seconds=30)  # ... and was taken
        assert reported.wait(timeout=60)  # the next renewal (due after 0.2 s) finds it taken, and says so
        with pytest.raises(LeaseLost, match="now held by keiko rollback ctr by oncall"):
            held.check()
    assert registry.current_lease("ctr").holder == "keiko rollback ctr by oncall"  # not released by the loser
