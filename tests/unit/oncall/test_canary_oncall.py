"""`keiko status` and `keiko rollback` during a canary: status shows the rollout in progress (its step, holds, last
verdict and what each server serves); rollback ends it, every user back on production, which a canary never moved.

ctr v1 is production on two in-thread replicas; v2 (v1's artifact, another identity) serves beside it as a canary,
set on the servers by hand (/admin/split), and its CanaryRecord and CanaryPointer are written by hand, as the
canary stage writes them.
"""

from __future__ import annotations

import datetime as dt
import json
import re
from pathlib import Path

import pytest

from conftest import DS, free_port, register_variant, serve_replicas, serving, v1_bytes
from keiko.cli import main
from keiko.config import settings
from keiko.contract import (
    CanaryCheck,
    CanaryEvent,
    CanaryPointer,
    CanaryRecord,
    CanaryVerdict,
    ModelLayout,
    RunLayout,
)
from keiko.oncall.status import ServerState, probe_servers, read_rollout
from keiko.process import EXIT_USER_ERROR
from keiko.registry import open_registry
from keiko.serving.client import ModelServerClient
from keiko.storage import open_store

pytestmark = pytest.mark.server

RUN_DAY = (dt.date.fromisoformat(DS) + dt.timedelta(days=1)).isoformat()  # the canary's run
RUN_ID = "manual__canary"
SALT = f"ctr-v2-{RUN_ID}"
HOLDING = "holding: online logloss, calibration (not enough data)"


def stamp(moment: dt.datetime) -> str:
    return moment.isoformat(timespec="seconds")


def canary_record(*, state: str = "running", held: dt.timedelta = dt.timedelta(minutes=3.2), **fields) -> CanaryRecord:
    """v2 beside v1 at step 1 (10%) of ctr's model.yaml plan, started `held` ago, one hold verdict."""
    started = dt.datetime.now(dt.UTC) - held
    at = stamp(started)
    verdict = CanaryVerdict(
        at=stamp(started + dt.timedelta(minutes=1)), step=1, weight=0.1, held_minutes=1.0, verdict="hold",
        requests={"canary": 120, "stable": 1_080}, outcomes={"canary": 0, "stable": 0},
        positives={"canary": 0, "stable": 0},
        checks=[CanaryCheck(check="online logloss", stable=None, canary=None, allowed="<= +2%",
                            verdict="not enough data")],
        summary=HOLDING,
    )  # fmt: skip
    values = dict(
        model="ctr", strategy="canary", version=2, stable_version=1, salt=SALT, run_id=RUN_ID, state=state, step=1,
        weight=0.1, started_at=at, step_started_at=at, baseline={}, verdicts=[verdict],
        timeline=[CanaryEvent(at=at, step=1, weight=0.1, event="started", detail="v2 canary at 10%")],
    )  # fmt: skip
    return CanaryRecord(**values | fields)


def write_canary(record: CanaryRecord) -> str:
    """The record in its run's directory, and the model's pointer to it, as the canary stage writes them."""
    store = open_store(settings())
    uri = RunLayout(store, "ctr", RUN_DAY).canary_record
    store.write_json(uri, record.model_dump(mode="json"))
    pointer = CanaryPointer(ds=RUN_DAY, run_id=record.run_id, record_uri=uri)
    store.write_json(ModelLayout(store, "ctr").canary_pointer, pointer.model_dump())
    return uri


def split(urls: list[str], version: int | None, weight: float = 0.0) -> None:
    for url in urls:
        with ModelServerClient(url) as server:
            server.set_split(version, weight, SALT if version else "")


@pytest.fixture
def replicas(run_home, monkeypatch):
    """v1 production on two replicas, v2 registered; neither replica carries a canary yet."""
    register_variant(v1_bytes(), window_start="2026-11-10")
    open_registry(settings().registry_url).move_alias("ctr", 1, note="deploy run test")
    with serve_replicas(2) as (_apps, urls):
        for url in urls:
            with ModelServerClient(url) as server:
                server.wait_until_serving(1, timeout=30)
        monkeypatch.setenv("KEIKO_SERVING_URLS_CTR", ",".join(urls))
        yield urls


def status_text(capsys: pytest.CaptureFixture) -> tuple[list[str], list[str]]:
    """`keiko status`: (the table's lines, the lines of the blocks under it)."""
    capsys.readouterr()
    assert main(["status"]) == 0
    table, _, blocks = capsys.readouterr().out.rstrip("\n").partition("\n\n")
    return table.split("\n"), blocks.split("\n") if blocks else []


def test_status_shows_the_running_canary_its_step_holds_verdict_and_each_server(replicas, monkeypatch, capsys):
    split(replicas, 2, 0.1)
    write_canary(canary_record())
    closed = f"http://127.0.0.1:{free_port()}"
    monkeypatch.setenv("KEIKO_SERVING_URLS_CTR", ",".join([*replicas, closed]))

    table, blocks = status_text(capsys)
    assert table[0].split()[:2] == ["model", "production"] and len(table) == 4  # the table as before: a row a model
    assert re.match(r"ctr\s+v1\s", table[1])
    head, servers = blocks
    assert re.fullmatch(
        rf"ctr: canary v2 beside production v1 \(run {RUN_ID}, ds {RUN_DAY}\): step 1 of 2 at 10% of users, held "
        rf"3\.[23] min \(of at least 1, at most 60\), last verdict hold: {re.escape(HOLDING)}",
        head,
    ), head
    assert servers == (
        f"  servers: {replicas[0]} v1 + canary v2 at 10%, {replicas[1]} v1 + canary v2 at 10%, {closed} unreachable"
    )

    capsys.readouterr()
    assert main(["status", "--json"]) == 0
    ctr, cvr, user_value = json.loads(capsys.readouterr().out)
    assert (
        "rollout" not in cvr and "rollout" not in user_value
    )  # nothing to tell: the key is absent, the rest as before
    rollout = ctr["rollout"]
    assert (rollout["state"], rollout["step"], rollout["steps"], rollout["weight"]) == ("running", 1, 2, 0.1)
    assert (rollout["min_hold_minutes"], rollout["max_hold_minutes"]) == (1, 60)
    assert rollout["last_verdict"]["verdict"] == "hold" and rollout["salt"] == SALT
    assert [s["canary"] and s["canary"]["version"] for s in rollout["servers"]] == [2, 2, None]
    assert rollout["servers"][2]["error"] == "unreachable"


def test_a_running_record_whose_canary_the_servers_no_longer_carry_is_said(replicas, capsys):
    write_canary(canary_record(run_id=None))
    _table, blocks = status_text(capsys)
    assert "(run by hand, ds " in blocks[0]
    assert blocks[1] == f"  servers: {replicas[0]} v1, {replicas[1]} v1"
    assert blocks[2].startswith("  no server carries canary v2: it was ended outside the canary stage")


def test_a_finished_rollout_is_one_line_with_its_end(replicas, capsys):
    finished = stamp(dt.datetime.now(dt.UTC))
    message = "canary of ctr v2 breached at step 1 (10%): online logloss +9%; reverted, v1 serves every user"
    write_canary(canary_record(state="reverted", finished_at=finished, message=message))
    _table, blocks = status_text(capsys)
    at = dt.datetime.fromisoformat(finished).strftime("%Y-%m-%d %H:%M UTC")
    assert blocks == [f"ctr: canary v2 beside v1 reverted at {at}: {message}"]


def test_a_canary_on_the_servers_without_a_running_record_is_said(replicas, capsys):
    split(replicas[:1], 2, 0.25)  # started by hand (/admin/split): no record
    _table, blocks = status_text(capsys)
    assert blocks == [
        "ctr: canary on the servers with no running rollout record (a canary started outside a run, or its record "
        f"lost): {replicas[0]} v1 + canary v2 at 25%; `keiko rollback ctr` ends it"
    ]


def test_nothing_to_tell_adds_nothing_and_a_lost_record_is_said(run_home, monkeypatch, capsys):
    monkeypatch.setenv("KEIKO_SERVING_URLS_CTR", f"http://127.0.0.1:{free_port()}")  # down: no rollout to tell of
    assert status_text(capsys)[1] == []
    store = open_store(settings())
    assert read_rollout(store, "ctr", probe_servers([f"http://127.0.0.1:{free_port()}"])) is None
    missing = RunLayout(store, "ctr", RUN_DAY).canary_record
    pointer = CanaryPointer(ds=RUN_DAY, run_id=RUN_ID, record_uri=missing)
    store.write_json(ModelLayout(store, "ctr").canary_pointer, pointer.model_dump())
    rollout = read_rollout(store, "ctr", [ServerState("http://a", error="unreachable")])
    assert rollout is not None and rollout.record is None and missing in rollout.error
    assert status_text(capsys)[1] == [f"ctr: canary record unreadable: the canary pointer names {missing}, which does "
                                      "not exist"]  # fmt: skip


def record_of(line: str) -> dict:
    """The rollback record a printed line names (`...; record: file:///...json`)."""
    return json.loads(Path(line.rsplit("record: file://", 1)[1].strip()).read_text())


@pytest.mark.parametrize(
    ("with_record", "flags"),
    [(True, []), (False, []), (True, ["--to", "1"])],
    ids=["running record", "canary without a record", "--to production"],
)
def test_rollback_during_a_canary_ends_it_and_leaves_production(replicas, capsys, with_record, flags):
    split(replicas, 2, 0.1)
    record = canary_record()
    uri = write_canary(record) if with_record else None
    registry = open_registry(settings().registry_url)
    history = registry.history("ctr")
    capsys.readouterr()
    assert main(["rollback", "ctr", *flags, "--reason", "v2 overbids"]) == 0
    out = capsys.readouterr().out

    assert serving(replicas) == [(1, None), (1, None)]  # every user on v1
    assert registry.alias("ctr") == 1 and registry.history("ctr") == history  # production never moved
    assert out.startswith("end the canary of ctr v2: every user back on production v1 (local: ")
    last = out.rstrip("\n").split("\n")[-1]
    assert last.startswith("ended the canary of v2: every user on v1 on 2 replica(s); record: file://")
    assert "/ctr/rollbacks/" in last
    change = record_of(last)
    assert (change["action"], change["from_version"], change["to_version"]) == ("rollback", 1, 1)
    assert (change["success"], change["alias_moved"], change["reason"]) == (True, False, "v2 overbids")
    assert [e["event"] for e in change["events"]] == ["canary ended", "canary ended"]
    if uri:  # the canary stage owns its record: its next analysis finds no canary and fails
        store = open_store(settings())
        assert RunLayout(store, "ctr", RUN_DAY).read(uri, CanaryRecord) == record


def test_rollback_of_a_canary_ended_already_says_so(replicas, capsys):
    write_canary(canary_record())  # running, by its record; the servers carry no canary
    capsys.readouterr()
    assert main(["rollback", "ctr"]) == 0
    last = capsys.readouterr().out.rstrip("\n").split("\n")[-1]
    assert last.startswith(
        "no server carried the canary of v2 any more (its record still says running): every user on v1 on 2 "
        "replica(s); record: file://"
    )
    assert [e["event"] for e in record_of(last)["events"]] == ["unchanged", "unchanged"]
    assert serving(replicas) == [(1, None), (1, None)]


def test_rollback_without_a_canary_is_the_rollback_it_was(replicas, capsys):
    write_canary(canary_record(state="promoted", finished_at=stamp(dt.datetime.now(dt.UTC))))  # ended: no canary
    capsys.readouterr()
    assert main(["rollback", "ctr"]) == EXIT_USER_ERROR
    assert "production v1 is its first: no previous version" in capsys.readouterr().err
