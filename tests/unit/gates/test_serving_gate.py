"""gate_serving: live replicas must answer the golden set as the offline candidate did, within the
latency budget. The check itself changes nothing: after it fails, the `rollback` step puts the previous
version back on the replicas and the alias, through the production path."""

import json

import httpx
import numpy as np
import pytest

from conftest import DS, run_step, run_steps, serve_replicas
from keiko.cli import main
from keiko.config import settings
from keiko.process import EXIT_GATE_FAILED, EXIT_USER_ERROR
from keiko.registry import open_registry

pytestmark = pytest.mark.server


@pytest.fixture
def apps(run_home, monkeypatch):
    with serve_replicas(2) as (apps, urls):
        monkeypatch.setenv("KEIKO_SERVING_URLS_CTR", ",".join(urls))
        yield apps, urls


def gate_serving() -> int:
    return main(["gate", "serving", "--model", "ctr", "--ds", DS])


def result() -> dict:
    return json.loads((settings().home / "artifacts" / "ctr" / DS / "gates" / "serving.json").read_text())


def test_replicas_that_answer_as_offline_pass(apps):
    run_steps("deploy")
    assert gate_serving() == 0
    facts = [o for o in result()["outcomes"] if o["column"] == "p95_latency_ms"]
    assert len(facts) == 2 and all(o["passed"] and o["value"] > 0 for o in facts)


def served(urls: list[str]) -> list[int]:
    return [httpx.get(f"{u}/version").json()["version"] for u in urls]


def test_skew_fails_and_rolls_back_to_the_previous_version(apps, project_copy, capsys):
    replica_apps, urls = apps
    run_steps("deploy")  # v1 is production
    path = project_copy / "include" / "models" / "ctr" / "model.yaml"
    path.write_text(path.read_text().replace("seed: 0", "seed: 1"))
    run_steps("train", "gate_training", "evaluate", "gate_evaluation", "register", "deploy")  # v2
    server = replica_apps[1].state.server
    exact = server.score
    # The seed's incident: one replica starts scoring in float16.
    server.score = lambda loaded, rows: np.float16(exact(loaded, rows)).astype(np.float64).tolist()
    capsys.readouterr()
    assert gate_serving() == EXIT_GATE_FAILED
    out = capsys.readouterr().out
    assert "replica2_answers" in out and "abs_error" in out
    registry = open_registry(settings().registry_url)
    assert served(urls) == [2, 2] and registry.alias("ctr") == 2  # a check changes nothing
    server.score = exact
    assert run_step("rollback") == 0  # what the DAG runs next (trigger rule one_failed)
    assert "rolled back to v1 (replicas and production alias)" in capsys.readouterr().out
    assert served(urls) == [1, 1]
    assert registry.alias("ctr") == 1 and registry.history("ctr")[-1]["note"] == f"gate_serving failed {DS}"
    # What on-call reads: the run page's deploy section has both changes, `keiko why` what the rollback did.
    page = (settings().home / "artifacts" / "ctr" / DS / "report.html").read_text()
    assert "production v1 -&gt; v2" in page and "production v2 -&gt; v1" in page
    assert main(["why", "ctr", DS]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == f"ctr {DS}: NOT promoted: v2 was deployed, then gate_serving failed on the live replicas"
    assert "  rolled back ctr: production v2 -> v1 on 2 replica(s)" in lines


def test_a_slow_service_fails_the_latency_budget(apps, project_copy, capsys):
    path = project_copy / "include" / "models" / "ctr" / "model.yaml"
    path.write_text(path.read_text().replace("p95_latency_ms: 100", "p95_latency_ms: 0.001"))
    run_steps("deploy")
    assert gate_serving() == EXIT_GATE_FAILED
    failed = [o["column"] for o in result()["outcomes"] if not o["passed"]]
    assert failed == ["p95_latency_ms", "p95_latency_ms"]
    capsys.readouterr()
    assert run_step("rollback") == EXIT_USER_ERROR
    assert "no previous version to roll back to: v1 keeps serving" in capsys.readouterr().err
