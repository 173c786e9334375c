"""Changes of production that race: two deploys, a deploy and `keiko rollback`, a holder killed mid-rollout.

Each change is its own `keiko` process, as Airflow tasks and on-call are, against two live replicas, on both
registry backends (SQLite, and DynamoDB on moto's server). The racers are lined up behind a lease the test
holds, then let go together. After each race every replica serves exactly the version the alias names, the
alias history has no lost move, and the loser says why it lost, naming the holder it waited for.

Versions 2 and 3 carry v1's artifact under other identities (register_variant): their known answers are
v1's, so the smoke tests pass and only the version numbers tell the racers apart.
"""

from __future__ import annotations

import dataclasses
import itertools
import os
import signal
import subprocess
import sys
import threading
import time
import uuid

import httpx
import pytest

from conftest import DS, candidate_day, register_variant, serve_replicas, v1_bytes
from keiko.config import settings
from keiko.process import EXIT_USER_ERROR
from keiko.registry import Registry, open_registry
from keiko.serving.client import ModelServerClient

pytestmark = pytest.mark.server

LOAD_SECONDS = 0.5  # each replica's /admin/load takes this long: rollouts overlap what races them


@dataclasses.dataclass
class World:
    registry: Registry
    urls: list[str]
    days: dict[int, str]  # version -> the run day whose deploy deploys it
    apps: list

    def slow_loads(self, seconds: float) -> None:
        for app in self.apps:
            server = app.state.server
            load = getattr(server, "_unslowed_load", server.load)
            server._unslowed_load = load
            server.load = lambda version, load=load: (time.sleep(seconds), load(version))[1]

    def served(self) -> list[int]:
        return [httpx.get(f"{url}/version").json()["version"] for url in self.urls]


@pytest.fixture(params=["sqlite", pytest.param("dynamodb", marks=pytest.mark.aws)])
def world(request, run_home, monkeypatch) -> World:
    """ctr v1 (this day's run), v2, v3 registered; production v1 on two live replicas."""
    if request.param == "dynamodb":
        request.getfixturevalue("aws")
        v1 = open_registry(settings().registry_url).get("ctr", 1)
        monkeypatch.setenv("KEIKO_REGISTRY_URL", f"dynamodb://keiko-races-{uuid.uuid4().hex[:12]}")
        open_registry(settings().registry_url).register(
            **{k: v for k, v in v1.to_dict().items() if k not in ("version", "created_at")}
        )
    registry = open_registry(settings().registry_url)
    versions = [1] + [register_variant(v1_bytes(), window_start=start) for start in ("2026-11-10", "2026-11-11")]
    days = {1: DS} | {v: candidate_day(f"2026-11-{20 + v}", v) for v in versions[1:]}
    registry.move_alias("ctr", 1, note="test: what serves before the race")
    with serve_replicas(2) as (apps, urls):
        for url in urls:
            with ModelServerClient(url) as server:
                server.wait_until_serving(1, timeout=30)
        monkeypatch.setenv("KEIKO_SERVING_URLS_CTR", ",".join(urls))
        world = World(registry, urls, days, apps)
        world.slow_loads(LOAD_SECONDS)
        yield world


class Keiko:
    """A `keiko` command in its own process, its output (stdout and stderr) collected as it comes."""

    def __init__(self, *args: str, **env: str) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "keiko", *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env={**os.environ, **env},
        )
        self.lines: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        for line in self.process.stdout:
            self.lines.append(line.rstrip("\n"))

    @property
    def output(self) -> str:
        return "\n".join(self.lines)

    def wait_for(self, text: str, timeout: float = 90) -> None:
        deadline = time.monotonic() + timeout
        while not any(text in line for line in self.lines):
            assert self.process.poll() is None, f"exited {self.process.returncode} before {text!r}:\n{self.output}"
            assert time.monotonic() < deadline, f"no {text!r} within {timeout:g}s:\n{self.output}"
            time.sleep(0.05)

    def finish(self, timeout: float = 180) -> int:
        code = self.process.wait(timeout=timeout)
        self._reader.join(timeout=5)
        return code


def deploy(world: World, version: int, **env: str) -> Keiko:
    return Keiko("stage", "deploy", "--model", "ctr", "--ds", world.days[version], **env)


def race(world: World, racers: dict[str, Keiko]) -> dict[str, int]:
    """Let racers that wait behind the test's lease go together; their exit codes."""
    for racer in racers.values():
        racer.wait_for("waiting up to")
    world.registry.release_lease(world.registry.current_lease("ctr"))
    return {name: racer.finish() for name, racer in racers.items()}


def hold_production(world: World) -> None:
    world.registry.acquire_lease("ctr", "the test, lining the racers up", seconds=300)


def assert_consistent(world: World, version: int, moves_before: list[dict], moved: bool = True) -> None:
    """Production is `version` on the alias and on every replica, and the history lost no move."""
    assert world.registry.alias("ctr") == version
    assert world.served() == [version] * len(world.urls)
    history = world.registry.history("ctr")
    assert history[: len(moves_before)] == moves_before
    assert len(history) == len(moves_before) + moved
    for before, after in itertools.pairwise(history):
        assert after["from_version"] == before["to_version"], history  # each move starts where the last ended
    assert world.registry.current_lease("ctr") is None


def test_two_deploys_of_different_versions_end_on_one(world):
    before = world.registry.history("ctr")
    hold_production(world)
    racers = {"v2": deploy(world, 2), "v3": deploy(world, 3)}
    codes = race(world, racers)
    assert sorted(codes.values()) == [0, EXIT_USER_ERROR], {name: r.output for name, r in racers.items()}
    won = next(name for name, code in codes.items() if code == 0)
    lost = next(name for name in racers if name != won)
    assert_consistent(world, int(won[1:]), before)
    line = racers[lost].lines[-1]
    assert line.startswith(f"keiko: error: ctr production moved from v1 to {won} (deploy run cli, at "), line
    winner = f"deploy of ctr {won} for `keiko stage deploy` by hand (pid {racers[won].process.pid} on "
    assert f"while this deploy waited for {winner}" in line, line
    assert line.endswith(f"{lost} not put into production, nothing changed"), line


def test_a_deploy_and_a_rollback_at_once_end_on_one(world):
    assert deploy(world, 2).finish() == 0  # production v2, previous v1
    before = world.registry.history("ctr")
    hold_production(world)
    racers = {"deploy": deploy(world, 3), "rollback": Keiko("rollback", "ctr", "--reason", "v2 overbids")}
    codes = race(world, racers)
    assert sorted(codes.values()) == [0, EXIT_USER_ERROR], {name: r.output for name, r in racers.items()}
    if codes["deploy"] == 0:
        assert_consistent(world, 3, before)
        line = racers["rollback"].lines[-1]
        assert line.startswith("keiko: error: ctr production moved from v2 to v3 (deploy run cli, at "), line
        assert "while this rollback waited for deploy of ctr v3 for `keiko stage deploy` by hand" in line, line
        assert line.endswith("v1 not put into production, nothing changed")
    else:
        assert_consistent(world, 1, before)
        line = racers["deploy"].lines[-1]
        assert line.startswith("keiko: error: ctr production moved from v2 to v1 (rollback by "), line
        assert ": v2 overbids, at " in line and "while this deploy waited for `keiko rollback ctr` by " in line, line
        assert line.endswith("v3 not put into production, nothing changed")


def stall_next_load(world: World, index: int) -> threading.Event:
    """Replica `index`'s next /admin/load waits until the event is set (then loads as asked)."""
    release = threading.Event()
    server = world.apps[index].state.server
    load = server.load

    def stalled(version: int):
        server.load = load  # this load only
        release.wait(timeout=120)
        return load(version)

    server.load = stalled
    return release


def kill_mid_rollout(world: World, successor: list[str]) -> tuple[Keiko, Keiko]:
    """A deploy of v2, stuck loading the second replica (the first serves v2), is killed with SIGKILL while
    `successor` (a keiko command) waits for its lease; the stuck load then completes. (victim, successor)."""
    release = stall_next_load(world, 1)
    victim = deploy(world, 2, KEIKO_LEASE_SECONDS="3")
    victim.wait_for(f"{world.urls[0]}: smoke passed v2")
    waiting = Keiko(*successor)
    waiting.wait_for("waiting up to")
    victim.process.send_signal(signal.SIGKILL)
    assert victim.finish() == -signal.SIGKILL
    release.set()  # the request the victim sent before it died is served: both replicas on v2, alias on v1
    assert world.registry.alias("ctr") == 1
    return victim, waiting


def test_the_next_deploy_proceeds_once_a_killed_holders_lease_expires(world):
    before = world.registry.history("ctr")
    victim, successor = kill_mid_rollout(world, ["stage", "deploy", "--model", "ctr", "--ds", world.days[3]])
    assert successor.finish() == 0, successor.output
    holder = f"deploy of ctr v2 for `keiko stage deploy` by hand (pid {victim.process.pid} on "
    assert f"held by {holder}" in successor.output
    assert_consistent(world, 3, before)
    assert world.registry.history("ctr")[-1]["from_version"] == 1  # v2 never became production


def test_the_dags_rollback_puts_a_killed_deploys_replicas_back(world):
    before = world.registry.history("ctr")
    _victim, rollback = kill_mid_rollout(world, ["stage", "rollback", "--model", "ctr", "--ds", world.days[2]])
    assert rollback.finish() == 0, rollback.output
    assert "did not finish: every replica back on production" in rollback.output
    assert_consistent(world, 1, before, moved=False)
