"""The run record: every `keiko stage|gate` leaves a step with its outcome and one line, however it ends."""

from conftest import DS, run_step
from keiko.config import settings
from keiko.contract import ModelLayout, RunLayout
from keiko.process import EXIT_GATE_FAILED, EXIT_SKIPPED
from keiko.runs import RunRecord, StepRecord, latest_run, write_step
from keiko.storage import open_store


def record() -> RunRecord:
    return RunRecord.load(open_store(settings()), "ctr", DS)


def test_each_step_records_how_it_ended_with_one_line(run_home, monkeypatch, project_copy, capsys):
    monkeypatch.setenv("KEIKO_RUN_ID", "manual__drill")
    assert run_step("extract") == 0
    out = capsys.readouterr().out.splitlines()
    # The log starts with what it will do and ends, before the machine-readable result, with one line.
    assert "keiko stage extract --model ctr --ds 2026-11-21: starting" in out[0]
    assert "data window 2026-11-14..2026-11-21" in out[1]
    assert out[-2].split("] ", 1)[1].startswith("extract done in ") and out[-1].startswith("keiko-result: ")

    path = project_copy / "include" / "models" / "ctr" / "model.yaml"
    path.write_text(path.read_text().replace("min_auc: 0.65", "min_auc: 0.99"))
    assert run_step("gate_evaluation") == EXIT_GATE_FAILED

    run = record()
    assert run.run_id == "manual__drill" and list(run.steps) == ["extract", "gate_evaluation"]
    assert run.steps["extract"].outcome == "success"
    failed = run.failed
    assert failed.task_id == "gate_evaluation" and failed.outcome == "failed"
    assert failed.message.startswith("gate_evaluation failed 1/") and "\n" not in failed.message
    assert run.outcome == "failed"


def test_a_skipped_step_ends_the_run_complete(run_home, monkeypatch):
    monkeypatch.setenv("KEIKO_RUN_PARAMS", '{"deploy": "skip"}')
    monkeypatch.setenv("KEIKO_RUN_ID", "manual__skip")
    assert run_step("register") == 0
    assert run_step("deploy") == EXIT_SKIPPED
    run = record()
    assert run.last_step.outcome == "skipped" and "deploy=skip" in run.last_step.message
    assert run.outcome == "complete"  # Airflow skips gate_serving without running it
    assert run.trigger["deploy"] == "skip"  # how the run was asked for, known from its first step on


def test_steps_of_an_earlier_run_of_the_day_are_not_part_of_the_latest(run_home, monkeypatch):
    store = open_store(settings())
    stale = StepRecord("train", "failed", "old", "scheduled__old", "2026-11-22T00:00:00", "2026-11-22T00:00:01", 1.0)
    write_step(RunLayout(store, "ctr", DS), stale)
    monkeypatch.setenv("KEIKO_RUN_ID", "manual__new")
    assert run_step("extract") == 0
    run = record()
    assert run.run_id == "manual__new" and list(run.steps) == ["extract"] and run.outcome == "incomplete"


def test_the_latest_run_is_the_one_that_ended_last(keiko_home):
    store = open_store(settings())
    assert latest_run(store, "ctr") is None and RunRecord.load(store, "ctr", DS) is None
    for ds, finished in (("2026-11-20", "2026-11-22T10:00:00"), ("2026-11-18", "2026-11-22T11:00:00")):
        write_step(
            RunLayout(store, "ctr", ds), StepRecord("extract", "success", "ok", f"r-{ds}", finished, finished, 1.0)
        )
    assert ModelLayout(store, "ctr").run_days() == ["2026-11-18", "2026-11-20"]
    assert latest_run(store, "ctr").ds == "2026-11-18"  # a backfill that ran last is the last run
