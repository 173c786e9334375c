"""The local rolling deploy: replicas move one at a time, each confirmed by known answers; any
failure puts the moved ones back and leaves the production alias alone."""

import json

import httpx
import pytest

from conftest import DS, run_steps, serve_replicas
from keiko.cli import main
from keiko.config import settings
from keiko.process import EXIT_RETRYABLE, EXIT_USER_ERROR
from keiko.registry import open_registry

pytestmark = pytest.mark.server


@pytest.fixture
def replicas(run_home, monkeypatch):
    with serve_replicas(2) as (_apps, urls):
        monkeypatch.setenv("KEIKO_SERVING_URLS_CTR", ",".join(urls))
        yield urls


def deploy() -> int:
    return main(["stage", "deploy", "--model", "ctr", "--ds", DS])


def served(urls):
    return [httpx.get(f"{url}/version").json()["version"] for url in urls]


def record():
    return json.loads((settings().home / "artifacts" / "ctr" / DS / "deploy.json").read_text())


def second_version(project_copy):
    """A blessed v2 for DS: the same data, another SGD seed."""
    path = project_copy / "include" / "models" / "ctr" / "model.yaml"
    path.write_text(path.read_text().replace("seed: 0", "seed: 1"))
    run_steps("train", "gate_training", "evaluate", "gate_evaluation", "register")
    assert open_registry(settings().registry_url).get("ctr", 2).status == "registered"


def test_replicas_move_one_at_a_time_then_the_alias(replicas):
    assert deploy() == 0
    assert served(replicas) == [1, 1]
    assert open_registry(settings().registry_url).alias("ctr") == 1
    steps = [(e["replica"], e["event"]) for e in record()["events"]]
    per_replica = ["loaded", "ready", "smoke passed"]
    assert steps == [(replicas[0], e) for e in per_replica] + [(replicas[1], e) for e in per_replica]


def test_a_failing_replica_rolls_the_moved_ones_back(replicas, project_copy, monkeypatch, capsys):
    assert deploy() == 0
    second_version(project_copy)
    # The second replica is gone: the first moves to v2, then must go back to v1.
    monkeypatch.setenv("KEIKO_SERVING_URLS_CTR", f"{replicas[0]},http://127.0.0.1:9")
    capsys.readouterr()
    assert deploy() == EXIT_RETRYABLE  # a replica down: Airflow retries it
    err = capsys.readouterr().err
    assert "rollout of v2 failed on http://127.0.0.1:9" in err and "rolled back 1 replica(s) to v1" in err
    assert served(replicas) == [1, 1]
    assert open_registry(settings().registry_url).alias("ctr") == 1
    events = [(e["replica"], e["event"], e["version"]) for e in record()["events"]]
    assert (replicas[0], "smoke passed", 2) in events and events[-1] == (replicas[0], "rolled back", 1)
    assert record()["success"] is False and record()["rolled_back"] is True


def test_wrong_known_answers_stop_the_rollout_on_the_first_replica(replicas, project_copy, capsys):
    assert deploy() == 0
    second_version(project_copy)
    golden = settings().home / "artifacts" / "ctr" / DS / "golden.parquet"
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    table = pq.read_table(golden)  # as if serving computed features differently from training
    index = table.schema.get_field_index("expected_prediction")
    pq.write_table(table.set_column(index, "expected_prediction", pc.add(table[index], 1e-3)), golden)
    capsys.readouterr()
    assert deploy() == EXIT_USER_ERROR
    assert "smoke predictions differ from the offline ones by 0.001" in capsys.readouterr().err
    assert served(replicas) == [1, 1]
    assert open_registry(settings().registry_url).alias("ctr") == 1


def test_a_replica_of_another_model_is_refused_before_anything_moves(run_home, monkeypatch, capsys):
    with serve_replicas(1, model="cvr") as (_apps, urls):
        monkeypatch.setenv("KEIKO_SERVING_URLS_CTR", urls[0])  # e.g. two model.yaml files with one port
        capsys.readouterr()
        assert deploy() == EXIT_USER_ERROR
        assert httpx.get(f"{urls[0]}/version").json()["version"] is None  # cvr's server loaded nothing of ctr's
    assert f"{urls[0]} serves model 'cvr', not 'ctr'" in capsys.readouterr().err
    assert open_registry(settings().registry_url).alias("ctr") is None
