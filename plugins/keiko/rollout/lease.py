"""Holding a model's production lease for the length of one change of production.

`hold(...)` takes the lease (keiko.registry: a SQL row or a DynamoDB item with an expiry), waiting up to a
bound while another holder has it, then keeps it renewed from a background thread until the change ends,
and gives it up. A holder that crashes stops renewing, so its lease expires and the next change proceeds.
`HeldLease.check()` raises LeaseLost once the lease may have lapsed (a renewal failed, or this process was
paused past the expiry it last secured): the backends call it before touching each server, and the alias
move is fenced by the registry itself.
"""

from __future__ import annotations

import contextlib
import os
import socket
import threading
import time
from collections.abc import Callable, Iterator

from keiko.errors import KeikoError, LeaseHeld, LeaseLost
from keiko.registry import Lease, Registry

POLL_SECONDS = 0.5  # between attempts to take a held lease


def process_identity() -> str:
    return f"pid {os.getpid()} on {socket.gethostname()}"


class HeldLease:
    """A lease this process holds, renewed every third of its length."""

    def __init__(
        self,
        registry: Registry,
        lease: Lease,
        seconds: float,
        log: Callable[[str], None],
        waited_for: Lease | None = None,
    ) -> None:
        self.registry = registry
        self.lease = lease
        self.waited_for = waited_for  # the last other holder this one waited for, if any
        self.seconds = seconds
        self.log = log
        self._margin = min(1.0, seconds / 10)  # clocks and the renewal's own round trip
        self._valid_until = time.monotonic() + seconds - self._margin
        self._lost: str | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._renew, name=f"lease-{lease.model}", daemon=True)

    def check(self) -> None:
        """LeaseLost if this process may no longer act on the lease."""
        if self._lost is None and time.monotonic() >= self._valid_until:
            self._lost = (
                f"{self.lease.model}'s lease of {self.lease.holder} lapsed: not renewed since {self.seconds:g}s"
            )
        if self._lost is not None:
            raise LeaseLost(self._lost)

    def _renew(self) -> None:
        while not self._stop.wait(self.seconds / 3):
            asked = time.monotonic()
            try:
                self.lease = self.registry.renew_lease(self.lease, self.seconds)
            except LeaseLost as exc:
                self._lost = str(exc)
                self.log(f"lease lost: {exc}")
                return
            except Exception as exc:  # the registry unreachable for a moment: try again until the lease lapses
                self.log(f"lease not renewed ({type(exc).__name__}: {exc}); retrying")
                continue
            self._valid_until = asked + self.seconds - self._margin

    def __enter__(self) -> HeldLease:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        self._thread.join(timeout=self.seconds)
        with contextlib.suppress(Exception):  # an unreachable registry: the lease expires by itself
            self.registry.release_lease(self.lease)


def acquire(
    registry: Registry, model: str, holder: str, *, seconds: float, wait: float, log: Callable[[str], None]
) -> tuple[Lease, Lease | None]:
    """Take `model`'s lease, waiting up to `wait` seconds while someone else holds it: (the lease, the last
    other holder's lease it waited for). LeaseHeld naming the holder when the wait is over."""
    deadline = time.monotonic() + wait
    waited_for: Lease | None = None
    while True:
        try:
            return registry.acquire_lease(model, holder, seconds), waited_for
        except LeaseHeld as exc:
            if time.monotonic() + POLL_SECONDS > deadline:
                raise LeaseHeld(
                    f"{model}'s production is being changed by {exc.lease.describe()}: gave up after waiting "
                    f"{wait:g}s (KEIKO_LEASE_WAIT_SECONDS); nothing was changed",
                    exc.lease,
                ) from None
            if waited_for is None or exc.lease.token != waited_for.token:
                log(f"waiting up to {wait:g}s for {model}'s production lease, held by {exc.lease.describe()}")
                waited_for = exc.lease
            time.sleep(POLL_SECONDS)


@contextlib.contextmanager
def hold(
    registry: Registry, model: str, holder: str, *, seconds: float, wait: float, log: Callable[[str], None]
) -> Iterator[HeldLease]:
    """The lease of `model`, held (and renewed) for the `with` block."""
    if seconds <= 0 or wait < 0:
        raise KeikoError(f"lease of {seconds:g}s, waited for up to {wait:g}s: both must be positive")
    lease, waited_for = acquire(registry, model, holder, seconds=seconds, wait=wait, log=log)
    log(f"took {model}'s production lease as {holder} until {lease.until()} (renewed while the change runs)")
    with HeldLease(registry, lease, seconds, log, waited_for) as held:
        yield held
