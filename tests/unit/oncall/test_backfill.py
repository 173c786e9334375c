"""`make backfill`'s lines about each day (keiko.oncall.backfill): what a day is doing, waiting for, or failed at."""

import datetime as dt
from types import SimpleNamespace

import pytest

from conftest import DS, run_step
from keiko.oncall.backfill import day_line, main


def run(day: str, state: str, conf: dict | None = None) -> SimpleNamespace:
    logical = dt.datetime.fromisoformat(f"{day}T02:00:00+00:00")
    return SimpleNamespace(logical_date=logical, state=state, run_id=f"backfill__{day}", conf=conf or {})


def test_a_waiting_day_names_the_partitions_it_waits_for(keiko_home):
    line = day_line("ctr", run("2026-11-23", "running"), {"wait_for_data": "deferred"})
    assert line == (
        "  2026-11-23 running: wait_for_data deferred, waiting for clicks/dt=2026-11-22, clicks/dt=2026-11-23, "
        "impressions/dt=2026-11-22 and 1 more (4 of 16 missing)"
    )
    assert day_line("ctr", run(DS, "running"), {"wait_for_data": "success", "train": "running"}) == (
        f"  {DS} running: train running"
    )
    assert day_line("ctr", run(DS, "queued"), {}) == f"  {DS} queued"


def test_a_failed_day_says_where_and_why(keiko_home, monkeypatch):
    monkeypatch.setenv("KEIKO_RUN_ID", f"backfill__{DS}")
    monkeypatch.setenv("KEIKO_WAREHOUSE_DIR", str(keiko_home / "empty"))
    assert run_step("extract") != 0  # no data: the step records why
    line = day_line("ctr", run(DS, "failed"), {"wait_for_data": "success", "extract": "failed"})
    assert line.startswith(f"  {DS} failed: failed at extract: missing warehouse partitions in ")
    # Before any keiko step (wait_for_data timed out): the task's log has it.
    line = day_line("ctr", run("2026-11-23", "failed"), {"wait_for_data": "failed"})
    assert line == "  2026-11-23 failed: failed at wait_for_data: see the task's log (`keiko why` once a step has run)"


@pytest.mark.parametrize("command", ["progress", "active", "cancel"])
def test_every_command_refuses_an_unknown_model_before_reading_airflow(command, capsys):
    assert main([command, "--model", "ctrr"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("backfill: unknown model 'ctrr'") and err.endswith("known models: ctr, cvr, user_value\n")
