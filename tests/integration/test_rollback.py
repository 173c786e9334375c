"""`keiko rollback` over live replicas: the production path moves them back one at a time,
each checked against the target's own known answers, then the production alias follows; a refusal or a
failing replica leaves production as it was.

Production history: v1 (the run of DS) deployed to two replicas, then v2 (a run on the day before with
deploy=force: other training days, so other weights and answers) deployed over it.
"""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import httpx
import pyarrow.parquet as pq
import pytest

from conftest import DS, copy_home, free_port, run_steps, serve_replicas, use_home
from keiko.cli import main
from keiko.config import settings
from keiko.process import EXIT_USER_ERROR
from keiko.registry import open_registry
from keiko.rollout.known_answers import known_answers
from keiko.serving.client import ModelServerClient
from keiko.stages.context import StageContext

pytestmark = pytest.mark.server

EARLIER = (dt.date.fromisoformat(DS) - dt.timedelta(days=1)).isoformat()
REASON = "v2 overbids on iOS since 09:40"


@pytest.fixture(scope="module")
def deployed_twice(pipeline_home: Path, warehouse_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """pipeline_home where v1 then v2 were deployed to two replicas; production is v2."""
    home = copy_home(pipeline_home, tmp_path_factory.mktemp("rollback") / "home")
    with pytest.MonkeyPatch.context() as patch:
        use_home(patch, home, warehouse_dir)
        with serve_replicas(2) as (_apps, urls):
            patch.setenv("KEIKO_SERVING_URLS_CTR", ",".join(urls))
            run_steps("deploy")
            patch.setenv("KEIKO_RUN_PARAMS", '{"deploy": "force"}')  # older data than v1's: history without it
            run_steps("extract", "features", "train", "evaluate", "gate_evaluation", "register", "deploy", ds=EARLIER)
    return home


@pytest.fixture
def replicas(deployed_twice, tmp_path, monkeypatch, warehouse_dir) -> list[str]:
    """Two fresh replicas of a private copy of `deployed_twice`, serving production v2; their URLs."""
    use_home(monkeypatch, copy_home(deployed_twice, tmp_path / "home"), warehouse_dir)
    with serve_replicas(2) as (_apps, urls):
        for url in urls:
            with ModelServerClient(url) as server:
                server.wait_until_serving(2, timeout=30)
        monkeypatch.setenv("KEIKO_SERVING_URLS_CTR", ",".join(urls))
        yield urls


def served(urls: list[str]) -> list[int]:
    return [httpx.get(f"{url}/version").json()["version"] for url in urls]


def registry():
    return open_registry(settings().registry_url)


def record_of(line: str) -> dict:
    """The rollback record a printed line names (`...; record: file:///...json`)."""
    return json.loads(Path(line.rsplit("record: file://", 1)[1].strip()).read_text())


def test_rollback_moves_each_replica_then_the_alias_back_to_the_previous_version(replicas, capsys):
    capsys.readouterr()
    assert main(["rollback", "ctr", "--reason", REASON]) == 0
    out = capsys.readouterr().out

    assert served(replicas) == [1, 1]
    assert registry().alias("ctr") == 1
    move = registry().history("ctr")[-1]
    assert (move["from_version"], move["to_version"]) == (2, 1)
    assert move["note"].startswith("rollback by ") and move["note"].endswith(f": {REASON}")
    # One replica at a time, each checked before the next is touched.
    steps = [f"{url}: {event} v1" for url in replicas for event in ("loaded", "ready", "smoke passed")]
    positions = [out.index(s) for s in steps]
    assert positions == sorted(positions), out
    last = out.rstrip("\n").split("\n")[-1]
    assert last.startswith("rolled back ctr: production v2 -> v1 on 2 replica(s); record: file://")
    record = record_of(last)
    assert (record["success"], record["from_version"], record["to_version"], record["reason"]) == (True, 2, 1, REASON)
    assert [e["event"] for e in record["events"]] == ["loaded", "ready", "smoke passed"] * 2


def test_the_smoke_test_is_the_targets_own_answers(deployed_twice, monkeypatch):
    monkeypatch.setenv("KEIKO_HOME", str(deployed_twice))
    ctx = StageContext.create("ctr", dt.date.fromisoformat(DS))
    golden = pq.read_table(deployed_twice / "artifacts" / "ctr" / DS / "golden.parquet").slice(0, 16)
    rows = golden.drop_columns(["expected_prediction"])
    v1, v2 = (known_answers(ctx.store, ctx.model, ctx.registry.get("ctr", n), rows) for n in (1, 2))
    # v1's answers are what evaluate computed for v1 on its test day; v2 answers the same rows otherwise.
    assert v1.expected == pytest.approx(golden["expected_prediction"].to_pylist(), abs=1e-12)
    assert max(abs(a - b) for a, b in zip(v1.expected, v2.expected, strict=True)) > 1e-4


def rejected_version() -> str:
    v1 = registry().get("ctr", 1)
    fields = {k: v for k, v in v1.to_dict().items() if k not in ("version", "status", "reason", "created_at")}
    registration = registry().register(
        **{**fields, "window_start": "2026-11-01"},
        status="rejected",
        reason="logloss_regression 0.02 not [-inf, 0.005]",
    )
    return str(registration.version.version)


def break_v1_artifact() -> str:
    path = Path(registry().get("ctr", 1).artifact_uri.removeprefix("file://"))
    data = path.read_bytes()
    path.write_bytes(data[:-1] + bytes([data[-1] ^ 1]))
    return "1"


@pytest.mark.parametrize(
    ("target", "message"),
    [
        (lambda: "9", "ctr has no version 9; registered: v1, v2"),
        (rejected_version, "ctr v3 is rejected (logloss_regression 0.02 not [-inf, 0.005]): only a registered"),
        (lambda: "2", "ctr v2 is production already: nothing to roll back"),
        (break_v1_artifact, "sha256 mismatch for file://"),
    ],
    ids=["unknown version", "rejected version", "production itself", "artifact sha256 mismatch"],
)
def test_a_refused_rollback_touches_nothing(replicas, capsys, target, message):
    history = registry().history("ctr")
    capsys.readouterr()
    assert main(["rollback", "ctr", "--to", target()]) == EXIT_USER_ERROR
    captured = capsys.readouterr()
    assert captured.err.startswith(f"keiko: error: {message}") and captured.err.count("\n") == 1, captured.err
    assert captured.out == ""  # not a single replica step
    assert served(replicas) == [2, 2]
    assert registry().alias("ctr") == 2 and registry().history("ctr") == history
    assert not (settings().home / "artifacts" / "ctr" / "rollbacks").exists()


def test_a_replica_failing_midway_puts_the_moved_ones_back_and_keeps_the_alias(replicas, monkeypatch, capsys):
    closed = f"http://127.0.0.1:{free_port()}"  # a replica that is down
    monkeypatch.setenv("KEIKO_SERVING_URLS_CTR", f"{replicas[0]},{closed},{replicas[1]}")
    capsys.readouterr()
    assert main(["rollback", "ctr", "--reason", REASON]) == EXIT_USER_ERROR
    captured = capsys.readouterr()

    assert captured.err.startswith(
        f"keiko: error: rollback of ctr to v1 failed, production stays v2: rollout of v1 failed on {closed}: "
        f"model server {closed} unreachable"
    )
    assert "; rolled back 1 replica(s) to v2; record: file://" in captured.err
    assert f"{replicas[0]}: loaded v1" in captured.out and f"{replicas[0]}: rolled back v2" in captured.out
    assert f"{replicas[1]}:" not in captured.out  # never reached
    assert served(replicas) == [2, 2]
    assert registry().alias("ctr") == 2 and registry().history("ctr")[-1]["to_version"] == 2
    record = record_of(captured.err)
    assert (record["success"], record["rolled_back"], record["alias_moved"]) == (False, True, False)
    assert [e["event"] for e in record["events"]][-2:] == ["failed", "rolled back"]
