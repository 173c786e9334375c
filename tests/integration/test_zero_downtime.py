"""Zero downtime: replicas under steady traffic through a rollout and through rollbacks caused by broken
versions. No request may fail, and every answer comes from either the old or the new version."""

from __future__ import annotations

import hashlib
import itertools
import threading
import time

import httpx
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from conftest import DS, register_variant, serve_replicas, v1_bytes
from keiko.config import settings
from keiko.registry import open_registry
from keiko.rollout import RolloutFailed, SmokeTest
from keiko.rollout.local import LocalRollout

pytestmark = pytest.mark.server


class Traffic:
    """Round-robin /predict requests over the replicas from a background thread, like a load balancer."""

    def __init__(self, urls: list[str], rows: list[dict]) -> None:
        self.urls, self.rows = urls, rows
        self.answers: list[tuple[int, int | None]] = []  # (HTTP status, model_version)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        with httpx.Client(timeout=10) as client:
            for url in itertools.cycle(self.urls):
                if self._stop.is_set():
                    return
                try:
                    response = client.post(f"{url}/predict", json={"rows": self.rows})
                    self.answers.append((response.status_code, response.json().get("model_version")))
                except httpx.HTTPError as exc:
                    self.answers.append((0, repr(exc)))

    def __enter__(self) -> Traffic:
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=30)


@pytest.fixture
def replicas(run_home):
    """Three replicas serving production v1: (apps, urls)."""
    registry = open_registry(settings().registry_url)
    registry.move_alias("ctr", 1)
    with serve_replicas(3) as (apps, urls):
        for url in urls:
            with httpx.Client() as client:
                for _ in range(300):
                    if client.get(f"{url}/readyz").status_code == 200:
                        break
                    time.sleep(0.05)
        yield apps, urls


def golden() -> pq.Table:
    return pq.read_table(settings().home / "artifacts" / "ctr" / DS / "golden.parquet")


def roll(urls: list[str], version: int, smoke: SmokeTest, ready_timeout: float = 10) -> tuple[list, Exception | None]:
    rows = smoke.rows[:4]
    rollout = LocalRollout(model="ctr", urls=urls, smoke=smoke, ready_timeout=ready_timeout, log=lambda _m: None)
    with Traffic(urls, rows) as traffic:
        time.sleep(0.5)  # traffic before the rollout starts
        error = None
        try:
            rollout.run(version, previous=1)
        except RolloutFailed as exc:
            error = exc
        time.sleep(0.5)  # and after it ends
    return traffic.answers, error


def test_a_rollout_under_traffic_drops_nothing(replicas):
    _apps, urls = replicas
    v2 = register_variant(v1_bytes(), window_start="2026-11-09")  # same weights: answers stay known
    answers, error = roll(urls, v2, SmokeTest.from_golden(golden()))
    assert error is None
    assert len(answers) > 50 and {status for status, _ in answers} == {200}
    assert {version for _, version in answers} == {1, 2}
    assert [httpx.get(f"{u}/version").json()["version"] for u in urls] == [v2] * 3


def _sha_mismatch(_apps):
    original = v1_bytes()
    return register_variant(original[:-1] + bytes([original[-1] ^ 1]), sha256=hashlib.sha256(original).hexdigest(),
                            window_start="2026-11-13")  # fmt: skip


def _load_raises(_apps):
    return register_variant(b"not a model", window_start="2026-11-12")


def _wrong_answers(_apps):
    v2 = register_variant(v1_bytes(), window_start="2026-11-11")
    table = golden()  # the offline answers disagree with what the replica computes: skew
    index = table.schema.get_field_index("expected_prediction")
    return v2, table.set_column(index, "expected_prediction", pc.multiply(table[index], 1.01))


def _fails_readiness(apps):
    """A version that loads fine, but the second replica's /readyz answers 503 while it serves it."""
    version = register_variant(v1_bytes(), window_start="2026-11-10")
    app = apps[1]
    server = app.state.server
    index, route = next((i, r) for i, r in enumerate(app.router.routes) if getattr(r, "path", None) == "/readyz")

    async def readyz(request: Request) -> JSONResponse:
        if server.current is not None and server.current.version == version:
            return JSONResponse({"ready": False, "reason": f"v{version}: a dependency is down"}, status_code=503)
        return await route.endpoint(request)

    app.router.routes[index] = Route("/readyz", readyz)
    return version


@pytest.mark.parametrize(
    "broken, reason, ready_timeout",
    [
        (_sha_mismatch, "sha256", 10),
        (_load_raises, "refused to load", 10),
        (_wrong_answers, "smoke predictions differ", 10),
        (_fails_readiness, "failed on {urls[1]}: {urls[1]} did not serve v{version} within 3s", 3),
    ],
    ids=["artifact sha256 mismatch", "load raises", "wrong answers after load", "fails readiness"],
)
def test_a_broken_version_is_rolled_back_under_traffic(replicas, broken, reason, ready_timeout):
    apps, urls = replicas
    made = broken(apps)
    version, table = made if isinstance(made, tuple) else (made, golden())
    answers, error = roll(urls, version, SmokeTest.from_golden(table), ready_timeout)
    assert isinstance(error, RolloutFailed), error
    assert reason.format(version=version, urls=urls) in str(error) and error.rolled_back, str(error)
    assert len(answers) > 50 and {status for status, _ in answers} == {200}, answers[:5]
    assert {v for _, v in answers} <= {1, version}
    assert [httpx.get(f"{u}/version").json()["version"] for u in urls] == [1] * 3
    assert [httpx.get(f"{u}/readyz").status_code for u in urls] == [200] * 3
