"""The rollback step (after a failure, trigger rule one_failed) puts production back through the production
path, by what this run's deploy did; the revert after a failed gate_serving is in tests/unit/gates/test_serving_gate.py.
"""

from __future__ import annotations

import httpx
import pytest

from conftest import DS, free_port, register_variant, run_step, serve_replicas, v1_bytes
from keiko.config import settings
from keiko.process import EXIT_RETRYABLE, EXIT_SKIPPED, EXIT_USER_ERROR
from keiko.registry import open_registry
from keiko.serving.client import ModelServerClient

pytestmark = pytest.mark.server


@pytest.fixture
def replicas(run_home, monkeypatch):
    """v1 (this day's run) and v2 (the same artifact, another identity) registered; two live replicas."""
    register_variant(v1_bytes(), window_start="2026-11-10")
    with serve_replicas(2) as (_apps, urls):
        monkeypatch.setenv("KEIKO_SERVING_URLS_CTR", ",".join(urls))
        yield urls


def served(urls: list[str]) -> list[int | None]:
    return [httpx.get(f"{url}/version").json()["version"] for url in urls]


def load(url: str, version: int) -> None:
    with ModelServerClient(url) as server:
        server.load(version)


def test_a_deploy_that_died_mid_rollout_gets_every_replica_back_on_production(replicas, capsys):
    registry = open_registry(settings().registry_url)
    registry.move_alias("ctr", 1)
    load(replicas[1], 1)
    load(replicas[0], 2)  # a deploy of v2 moved the first replica, then its process was killed: no record
    capsys.readouterr()
    assert run_step("rollback") == 0
    out = capsys.readouterr().out
    assert f"{replicas[0]}: loaded v1" in out and f"{replicas[1]}: unchanged v1" in out
    assert served(replicas) == [1, 1] and registry.alias("ctr") == 1
    assert len(registry.history("ctr")) == 1  # the alias never moved


def test_a_deploy_that_put_its_replicas_back_itself_leaves_nothing_to_do(replicas, monkeypatch, capsys):
    registry = open_registry(settings().registry_url)
    registry.move_alias("ctr", 2)
    for url in replicas:
        load(url, 2)
    monkeypatch.setenv("KEIKO_SERVING_URLS_CTR", f"{replicas[0]},http://127.0.0.1:{free_port()}")
    assert run_step("deploy") == EXIT_RETRYABLE  # v1 on the first replica, the second is down: back to v2
    capsys.readouterr()
    assert run_step("rollback") == EXIT_SKIPPED
    assert "deploy failed and put the replicas back itself: deploy of ctr to v1 failed" in capsys.readouterr().out
    assert served(replicas) == [2, 2] and registry.alias("ctr") == 2


def test_a_run_that_did_not_deploy_has_nothing_to_roll_back(replicas, monkeypatch, capsys):
    monkeypatch.setenv("KEIKO_RUN_PARAMS", '{"deploy": "skip"}')
    assert run_step("deploy") == EXIT_SKIPPED
    capsys.readouterr()
    assert run_step("rollback") == EXIT_SKIPPED
    assert f"this run of ctr {DS} did not deploy: nothing to roll back" in capsys.readouterr().out


def test_production_moved_since_the_deploy_is_not_overridden(replicas, capsys):
    registry = open_registry(settings().registry_url)
    registry.move_alias("ctr", 2)
    for url in replicas:
        load(url, 2)
    assert run_step("deploy") == 0  # v2 -> v1
    v3 = register_variant(v1_bytes(), window_start="2026-11-09")
    registry.move_alias("ctr", v3, note="keiko rollback by oncall: v1 overbids")  # on-call acted meanwhile
    capsys.readouterr()
    assert run_step("rollback") == EXIT_USER_ERROR
    err = capsys.readouterr().err
    assert "ctr production moved from v1 to v3 (keiko rollback by oncall: v1 overbids, at " in err
    assert err.rstrip().endswith("since this rollback looked: v2 not put into production, nothing changed")
    assert served(replicas) == [1, 1] and registry.alias("ctr") == v3
