"""deploy moves the production alias only after the servers confirm; a worse candidate is not deployed."""

import json

import httpx
import pytest

from conftest import DS, run_steps, serve_in_thread
from keiko.cli import main
from keiko.config import settings
from keiko.process import EXIT_GATE_FAILED, EXIT_RETRYABLE, EXIT_SKIPPED
from keiko.registry import open_registry
from keiko.serving.app import create_app

pytestmark = pytest.mark.server


@pytest.fixture
def live_server(run_home, monkeypatch):
    with serve_in_thread(create_app("ctr")) as url:
        monkeypatch.setenv("KEIKO_SERVING_URLS_CTR", url)
        yield url


def deploy() -> int:
    return main(["stage", "deploy", "--model", "ctr", "--ds", DS])


def test_first_deploy_loads_the_server_then_moves_the_alias(live_server):
    registry = open_registry(settings().registry_url)
    assert registry.alias("ctr") is None
    assert deploy() == 0
    assert httpx.get(f"{live_server}/version").json()["version"] == 1
    assert registry.alias("ctr") == 1
    assert deploy() == 0  # a retry is a no-op
    assert [h["to_version"] for h in registry.history("ctr")] == [1]


def test_an_unblessed_candidate_is_registered_as_rejected_and_not_deployed(live_server, project_copy, capsys):
    assert deploy() == 0
    path = project_copy / "include" / "models" / "ctr" / "model.yaml"
    # A slightly worse candidate: 1,024 hash buckets for 14 slots collide, yet pass the absolute thresholds.
    path.write_text(path.read_text().replace("hash_bits: 20", "hash_bits: 10"))
    run_steps("features", "train", "evaluate")
    assert main(["gate", "evaluation", "--model", "ctr", "--ds", DS]) == EXIT_GATE_FAILED
    run_steps("register")  # in the DAG it runs after a failed gate_evaluation too (all_done_min_one_success)
    registry = open_registry(settings().registry_url)
    rejected = registry.get("ctr", 2)
    assert rejected.status == "rejected" and rejected.reason.startswith("logloss_regression")
    capsys.readouterr()

    assert deploy() == EXIT_SKIPPED
    out = capsys.readouterr().out
    assert "ctr v2 not deployed: rejected: logloss_regression" in out
    assert out.rstrip().endswith("production stays v1")
    assert registry.alias("ctr") == 1
    assert httpx.get(f"{live_server}/version").json()["version"] == 1


def test_unreachable_server_fails_and_leaves_the_alias(run_home, monkeypatch, capsys):
    monkeypatch.setenv("KEIKO_SERVING_URLS_CTR", "http://127.0.0.1:9")
    assert deploy() == EXIT_RETRYABLE  # a replica down: Airflow retries it
    assert "unreachable" in capsys.readouterr().err
    assert open_registry(settings().registry_url).alias("ctr") is None


def test_deploy_result_is_recorded(live_server):
    assert deploy() == 0
    result = json.loads((settings().home / "artifacts" / "ctr" / DS / "stages" / "deploy.json").read_text())
    assert result["version"] == 1 and result["previous_version"] is None and result["servers"] == [live_server]
