"""The bad-input catalogue: each upstream fault, written into the warehouse by `keiko synth --inject`,
is stopped by the gate that exists for it, the log names the failing expectation, and production
keeps serving the model it served before.

Production is v1, trained on the window ending DS and deployed to a live server; each case then runs
the next day's pipeline over a warehouse with one fault injected, step by step as the DAG would.
"""

from __future__ import annotations

import datetime as dt
import shutil
from dataclasses import dataclass
from pathlib import Path

import pytest

from conftest import END_DATE, UP_TO_REGISTER, copy_home, run_step, serve_in_thread
from keiko.cli import main
from keiko.config import settings
from keiko.process import EXIT_GATE_FAILED, EXIT_SKIPPED, EXIT_USER_ERROR
from keiko.registry import open_registry
from keiko.serving.app import create_app

pytestmark = pytest.mark.server

NEXT = END_DATE + dt.timedelta(days=1)  # the run after production's
TRAIN_DAYS = [NEXT - dt.timedelta(days=offset) for offset in range(7, 1, -1)]  # window minus valid and test


@dataclass(frozen=True)
class Case:
    inject: tuple[str, ...]
    stopped_by: str
    expectation: str  # what the stopping step's log must name, next to `column` (and `suite`, when given)
    column: str
    exit_code: int = EXIT_GATE_FAILED
    suite: str = ""  # the source table's suite, for faults stopped at the source grain


def day(offset: int) -> str:
    return (NEXT - dt.timedelta(days=offset)).isoformat()


CATALOGUE = {
    "missing column": Case(("missing-column",), "gate_raw", "values_to_not_be_null", "country"),  # NULL as in Athena
    "wrong type": Case(("wrong-type",), "gate_raw", "values_to_be_in_type_list", "position"),
    "nulls in a key": Case(("null-key",), "gate_raw", "values_to_not_be_null", "impression_id"),
    "out-of-range values": Case(("out-of-range",), "gate_raw", "values_to_be_between", "position"),
    "unit x100": Case(("unit-x100",), "gate_raw", "values_to_be_between", "floor_price"),
    "re-mapped codes": Case(("remapped-codes",), "gate_features", "kl_divergence_to_be_less_than", "app_id"),
    "label rate collapse": Case(("label-collapse",), "gate_raw", "values_to_be_between", "label_rate"),
    "volume drop to 30%": Case((f"volume-drop:{day(2)}",), "gate_raw", "values_to_be_between", "rows"),
    "duplicated rows": Case(("duplicates",), "gate_raw", "values_to_be_unique", "impression_id"),
    "empty partition": Case((f"empty-partition:{day(3)}",), "gate_raw", "distinct_values_to_equal_set", "dt"),
    "missing day": Case(
        (f"missing-day:{day(3)}",), "extract", "missing warehouse partitions", f"dt={day(3)}", EXIT_USER_ERROR
    ),
    # 70% of a day's traffic from one country: its most frequent value's share jumps at the source already.
    "strong feature drift": Case(
        ("drift",), "gate_raw", "values_to_be_between", "top share change: country", suite="impressions.days"
    ),
    # Faults of one source table that the extract's joins hide (each named with its table's suite).
    "timestamps in the wrong day": Case(
        ("shifted-timestamps",), "gate_raw", "values_to_be_between", "event_time", suite=f"impressions dt={day(0)}"
    ),
    "click log replayed": Case(
        ("replayed-clicks",),
        "gate_raw",
        "compound_columns_to_be_unique",
        "impression_id,click_time",
        suite=f"clicks dt={day(0)}",
    ),
    "clicks without an impression": Case(
        ("orphan-clicks",),
        "gate_raw",
        "values_to_not_be_null",
        "impression_id in impressions",
        suite=f"clicks.references dt={day(0)}",
    ),
    "clicks before their impression": Case(
        ("clicks-before-impressions",),
        "gate_raw",
        "values_to_be_between",
        "hours after impressions.event_time",
        suite=f"clicks.references dt={day(0)}",
    ),
    # Faults only visible against the other days of the window.
    "a column collapsing onto a default": Case(
        ("default-collapse",),
        "gate_raw",
        "values_to_be_between",
        "top share change: floor_price",
        suite="impressions.days",
    ),
    "hours of the day missing": Case(
        ("ingestion-outage",), "gate_raw", "values_to_be_between", "hour profile distance", suite="impressions.days"
    ),
    "worse than production": Case(
        tuple(f"label-noise:{d}" for d in TRAIN_DAYS), "gate_evaluation", "values_to_be_between", "logloss_regression"
    ),
}


@pytest.fixture(scope="module")
def production_home(pipeline_home: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """pipeline_home with v1 deployed (a live server loaded it, the alias moved)."""
    home = copy_home(pipeline_home, tmp_path_factory.mktemp("production") / "home")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("KEIKO_HOME", str(home))
        with serve_in_thread(create_app("ctr")) as url:
            patch.setenv("KEIKO_SERVING_URLS_CTR", url)
            assert main(["stage", "deploy", "--model", "ctr", "--ds", END_DATE.isoformat()]) == 0
    return home


def run_like_the_dag(ds: str, capsys: pytest.CaptureFixture) -> tuple[str, int, str, list[str]]:
    """Steps in DAG order until one fails; returns (failed step, exit code, its log, steps run).

    A failed gate_evaluation still lets register record the candidate as rejected (its trigger rule),
    and deploy then skips: that is part of what this test checks.
    """
    ran: list[str] = []
    for step in (*UP_TO_REGISTER, "deploy"):
        capsys.readouterr()
        code = run_step(step, ds)
        ran.append(step)
        if code != 0:
            captured = capsys.readouterr()
            if step == "gate_evaluation":
                assert run_step("register", ds) == 0
                assert run_step("deploy", ds) == EXIT_SKIPPED
            return step, code, captured.out + captured.err, ran
    pytest.fail(f"no step stopped the run: {ran}")


@pytest.mark.parametrize("name", CATALOGUE)
def test_the_gate_stops_the_fault(name, production_home, warehouse_dir, tmp_path, monkeypatch, capsys):
    case = CATALOGUE[name]
    home = copy_home(production_home, tmp_path / "home")
    warehouse = tmp_path / "warehouse"
    shutil.copytree(warehouse_dir, warehouse)
    monkeypatch.setenv("KEIKO_HOME", str(home))
    monkeypatch.setenv("KEIKO_WAREHOUSE_DIR", str(warehouse))
    first = min(dt.date.fromisoformat(spec.partition(":")[2] or NEXT.isoformat()) for spec in case.inject)
    days = (NEXT - first).days + 1
    injections = [arg for spec in case.inject for arg in ("--inject", spec)]
    synth = ["synth", "--end-date", NEXT.isoformat(), "--days", str(days), "--rows-per-day", "30000"]
    assert main([*synth, *injections]) == 0

    step, code, log, ran = run_like_the_dag(NEXT.isoformat(), capsys)

    assert (step, code) == (case.stopped_by, case.exit_code), log
    assert any(case.suite in line and case.expectation in line and case.column in line for line in log.splitlines()), (
        log
    )
    registry = open_registry(settings().registry_url)
    assert registry.alias("ctr") == 1
    assert [h["to_version"] for h in registry.history("ctr")] == [1]
    new_versions = [v for v in registry.list("ctr") if v.ds == NEXT.isoformat()]
    if step == "gate_evaluation":
        assert [v.status for v in new_versions] == ["rejected"]
    else:
        assert new_versions == [] and "register" not in ran
