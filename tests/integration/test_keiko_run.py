"""`keiko run` on a small synthetic warehouse, as a user runs it: each step a real process, progress lines
around the steps' own output, and a fault stopping the run at its gate with the gate's exit code and reason."""

from __future__ import annotations

import datetime as dt
import re
import shutil
import subprocess
import sys

import pytest

from conftest import DS, END_DATE
from keiko.cli import main
from keiko.config import settings
from keiko.contract import RunLayout
from keiko.pipeline import PIPELINE
from keiko.process import EXIT_GATE_FAILED, RESULT_PREFIX
from keiko.runs import StepRecord, read_step
from keiko.storage import open_store

pytestmark = pytest.mark.slow  # whole pipelines, step by step


def keiko_run(*args: str) -> tuple[int, list[str]]:
    """`keiko run ...` as a process; its exit code and its output lines (stdout: everything but a usage error)."""
    result = subprocess.run([sys.executable, "-m", "keiko", "run", *args], capture_output=True, text=True)
    assert result.stderr == "", result.stderr
    return result.returncode, result.stdout.splitlines()


def steps_recorded(ds: str) -> dict[str, StepRecord]:
    """The steps of ctr's run of `ds` that wrote their record, in pipeline order."""
    layout = RunLayout(open_store(settings()), "ctr", ds)
    return {step.task_id: record for step in PIPELINE if (record := read_step(layout, step.task_id))}


def test_a_run_until_gate_features_runs_those_steps_as_the_dag_would(keiko_home):
    code, lines = keiko_run("--model", "ctr", "--ds", DS, "--until", "gate_features")

    assert code == 0, "\n".join(lines[-30:])
    ran = ["extract", "gate_raw", "features", "gate_features"]
    progress = [line for line in lines[:-1] if line.startswith("=== ") and line.split()[1] in ran]  # not the summary
    assert [line.split()[1:3] for line in progress] == [
        [task, state] for task in ran for state in ("started", "success")
    ]
    assert any(re.search(r"gate_raw passed: \d+ expectations", line) for line in lines)  # the step's own output
    assert not any(line.startswith(RESULT_PREFIX) for line in lines)
    assert lines[-1].startswith("=== extract .. gate_features in ") and lines[-1].endswith(": 4 success")

    records = steps_recorded(DS)
    assert list(records) == ran and all(r.outcome == "success" for r in records.values())
    run_ids = {r.run_id for r in records.values()}
    assert len(run_ids) == 1 and next(iter(run_ids)).startswith("manual__")  # one run, as the operator names it
    assert lines[0].endswith(f"run {next(iter(run_ids))}")
    assert all(r.trigger["run_type"] == "manual" for r in records.values())


def test_a_fault_stops_the_run_at_its_gate_with_its_exit_code_and_reason(
    keiko_home, warehouse_dir, tmp_path, monkeypatch
):
    warehouse = tmp_path / "warehouse"
    shutil.copytree(warehouse_dir, warehouse)
    monkeypatch.setenv("KEIKO_WAREHOUSE_DIR", str(warehouse))
    next_day = (END_DATE + dt.timedelta(days=1)).isoformat()
    synth = ["synth", "--end-date", next_day, "--days", "1", "--rows-per-day", "30000"]
    assert main([*synth, "--inject", "missing-column"]) == 0

    code, lines = keiko_run("--model", "ctr", "--ds", next_day)

    assert code == EXIT_GATE_FAILED, "\n".join(lines[-30:])
    gate_raw = steps_recorded(next_day)["gate_raw"]
    assert gate_raw.outcome == "failed" and "values_to_not_be_null on country" in gate_raw.message
    assert lines[-1] == f"keiko: failed at gate_raw (exit 3): {gate_raw.message}"
    assert "=== features upstream_failed: not run (trigger rule all_success)" in lines
    # Nothing after the gate ran but rollback (trigger rule one_failed), which found nothing to undo.
    records = steps_recorded(next_day)
    assert list(records) == ["extract", "gate_raw", "rollback"] and records["rollback"].outcome == "skipped"
    assert len({r.run_id for r in records.values()}) == 1
