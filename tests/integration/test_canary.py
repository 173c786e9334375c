"""Canaries and A/B experiments judged on online signals, with `keiko traffic` feeding two live replicas.

ctr v1 serves. A candidate is deployed as a canary (the run's deploy_strategy), the day is lived through the replicas,
and the canary stage is called as the DAG's deferred task calls it. A good candidate is promoted through both steps.
One trained on a world that has since moved (clicks 30% less likely on every day of its window, as under an ad format
since withdrawn; back to usual on the day it serves) passes every offline gate and is reverted at the first step with
enough outcomes, every request answered. Thin traffic holds, and past the hold's bound fails in one line with stable
serving. An A/B experiment reports the better version when the gap is real, "no difference" when it is not, and
promotes the winner only when model.yaml says so.
"""

from __future__ import annotations

import datetime as dt
import json
import shutil
import time
from pathlib import Path

import pytest
import yaml

from conftest import (
    DS,
    ROWS_PER_DAY,
    UP_TO_REGISTER,
    candidate_day,
    register_variant,
    run_step,
    run_steps,
    serve_replicas,
    serving,
    v1_bytes,
)
from keiko.cli import main
from keiko.config import settings
from keiko.contract import CanaryRecord, RunLayout
from keiko.process import EXIT_GATE_FAILED, EXIT_SKIPPED, EXIT_USER_ERROR
from keiko.registry import open_registry
from keiko.storage import open_store

pytestmark = [pytest.mark.server, pytest.mark.slow]
RUN_DAY = dt.date.fromisoformat(DS) + dt.timedelta(days=1)  # the candidate's run
LIVE_DAY = RUN_DAY + dt.timedelta(days=1)  # the day it serves
CANARY = {
    "steps": [
        {"weight": 0.25, "min_requests": 500, "min_outcomes": 1500},
        {"weight": 0.5, "min_requests": 1000, "min_outcomes": 3000},
    ],
    "max_hold_minutes": 30,
    "check_every_seconds": 1,
    # Two equal versions are "significantly worse" by chance once in 40: a person would be asked (tested in
    # tests/unit/stages/test_canary_stage.py); these tests are about the steps.
    "approve_thin_margin": False,
}


@pytest.fixture
def live(run_home, project_copy, warehouse_dir, tmp_path, monkeypatch):
    """ctr v1 in production on two replicas, over a private copy of the warehouse that the servers log into; ctr's
    model.yaml with CANARY's steps (a canary of minutes at the demo's volume)."""
    model_yaml = project_copy / "include" / "models" / "ctr" / "model.yaml"
    config = yaml.safe_load(model_yaml.read_text())
    config["deploy"]["canary"] = CANARY
    model_yaml.write_text(yaml.safe_dump(config, sort_keys=False))
    warehouse = shutil.copytree(warehouse_dir, tmp_path / "warehouse")
    monkeypatch.setenv("KEIKO_WAREHOUSE_DIR", str(warehouse))
    monkeypatch.setenv("KEIKO_PREDICTION_LOG_URL", (warehouse / "predictions").as_uri())
    with serve_replicas(2) as (apps, urls):
        monkeypatch.setenv("KEIKO_SERVING_URLS_CTR", ",".join(urls))
        run_steps("deploy")  # v1: rolling, the first production
        monkeypatch.setenv("KEIKO_RUN_PARAMS", json.dumps({"deploy_strategy": "canary"}))
        yield apps, urls, warehouse


def live_a_day(apps, day: dt.date, rows: int) -> None:
    """`keiko traffic` for `day` (every request must be answered: it fails otherwise), then the replicas' logs
    written, as their writer thread does every few seconds."""
    assert main(["traffic", "--model", "ctr", "--day", day.isoformat(), "--rows", str(rows)]) == 0
    for app in apps:
        app.state.server.prediction_log.flush()


def canary_record(ds: dt.date) -> CanaryRecord:
    return RunLayout(open_store(settings()), "ctr", ds.isoformat()).find(
        RunLayout(open_store(settings()), "ctr", ds.isoformat()).canary_record, CanaryRecord
    )


def test_a_good_candidate_is_promoted_through_every_step(live, capsys):
    apps, urls, _warehouse = live
    v2 = register_variant(v1_bytes(), window_start="2026-11-10")  # v1's weights: as good online as offline
    ds = dt.date.fromisoformat(candidate_day(RUN_DAY.isoformat(), v2))
    run_steps("deploy", ds=ds.isoformat())
    assert serving(urls) == [(1, 2), (1, 2)]  # v2 beside v1 on both replicas
    assert open_registry(settings().registry_url).alias("ctr") == 1

    assert run_step("canary", ds=ds.isoformat()) == 0  # no traffic yet: holds
    assert canary_record(ds).verdicts[-1].verdict == "hold"
    live_a_day(apps, LIVE_DAY, 8_000)
    assert run_step("canary", ds=ds.isoformat()) == 0  # step 1 passes: 50%
    record = canary_record(ds)
    assert (record.step, record.weight, record.state) == (2, 0.5, "running")
    live_a_day(apps, LIVE_DAY + dt.timedelta(days=1), 8_000)
    assert run_step("canary", ds=ds.isoformat()) == 0
    out = capsys.readouterr().out

    record = canary_record(ds)
    assert record.state == "promoted" and [e.event for e in record.timeline] == ["started", "advanced", "promoted"]
    assert [v.verdict for v in record.verdicts] == ["hold", "pass", "pass"]
    assert open_registry(settings().registry_url).alias("ctr") == v2
    assert serving(urls) == [(v2, None), (v2, None)]
    assert "verdict: PASS: every check passed with its sample" in out and "online logloss" in out
    step_1 = record.verdicts[1]
    assert step_1.outcomes["canary"] >= 1500 and step_1.outcomes["stable"] > step_1.outcomes["canary"]
    assert main(["why", "ctr", ds.isoformat()]) == 0
    assert "canary on 2 replica(s), steps 25%, 50%: promoted" in capsys.readouterr().out


def shift_the_window(warehouse: Path, click_rate: float) -> None:
    """The candidate's window (RUN_DAY's 8 days) regenerated with every click `click_rate` more likely (-0.3: less)."""
    from keiko.synth import World, WorldChange, daily_rows, generate_day, write_day

    world = World.from_seed(7)
    for offset in range(8):
        day = RUN_DAY - dt.timedelta(days=offset)
        tables = generate_day(world, day, daily_rows(day, ROWS_PER_DAY, 7), 7, WorldChange(click_rate=click_rate))
        write_day(warehouse, day, tables)


def test_a_candidate_worse_online_than_offline_is_reverted_at_the_first_step_with_enough_outcomes(live, capsys):
    apps, urls, warehouse = live
    shift_the_window(warehouse, click_rate=-0.3)
    run_steps(*UP_TO_REGISTER, ds=RUN_DAY.isoformat())  # every offline gate passes: blessed against v1
    capsys.readouterr()
    run_steps("deploy", ds=RUN_DAY.isoformat())
    record = canary_record(RUN_DAY)
    assert (record.version, record.stable_version) == (2, 1)

    live_a_day(apps, LIVE_DAY, 1_000)  # a few hundred canary answers: not enough to judge either way
    assert run_step("canary", ds=RUN_DAY.isoformat()) == 0
    assert canary_record(RUN_DAY).verdicts[-1].verdict == "hold"
    live_a_day(apps, LIVE_DAY, 12_000)  # the world is back to usual (no shift recorded): clicks as ever
    assert run_step("canary", ds=RUN_DAY.isoformat()) == EXIT_GATE_FAILED
    out, err = capsys.readouterr()

    record = canary_record(RUN_DAY)
    verdict = record.verdicts[-1]
    assert record.state == "reverted" and verdict.verdict == "breach" and record.step == 1
    checks = {c.check: c for c in verdict.checks}
    assert checks["calibration"].verdict == "breach" and checks["calibration"].canary < 0.8  # ~0.7: under-predicts
    assert checks["error rate (5xx)"].verdict == "pass" and checks["error rate (5xx)"].canary == 0
    assert "breached at step 1 (25%)" in err and "reverted, v1 serves every user" in err
    assert "calibration" in out and "verdict: BREACH" in out
    assert serving(urls) == [(1, None), (1, None)]
    assert open_registry(settings().registry_url).alias("ctr") == 1
    assert main(["why", "ctr", RUN_DAY.isoformat()]) == 0
    assert "NOT promoted: canary failed" in capsys.readouterr().out


def test_thin_traffic_holds_then_fails_in_one_line_with_stable_serving(live, project_copy, capsys):
    apps, urls, _warehouse = live
    model_yaml = project_copy / "include" / "models" / "ctr" / "model.yaml"
    config = yaml.safe_load(model_yaml.read_text())
    config["deploy"]["canary"]["max_hold_minutes"] = 0.05  # 3 s
    model_yaml.write_text(yaml.safe_dump(config, sort_keys=False))
    v2 = register_variant(v1_bytes(), window_start="2026-11-10")
    ds = dt.date.fromisoformat(candidate_day(RUN_DAY.isoformat(), v2))
    run_steps("deploy", ds=ds.isoformat())

    live_a_day(apps, LIVE_DAY, 300)
    assert run_step("canary", ds=ds.isoformat()) == 0
    assert canary_record(ds).verdicts[-1].verdict == "hold"  # too little data is no breach
    assert serving(urls) == [(1, v2), (1, v2)]
    time.sleep(3.5)
    assert run_step("canary", ds=ds.isoformat()) == EXIT_GATE_FAILED
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert "held too long at step 1 (25%): not enough data after" in err and "canary outcomes" in err
    assert err.endswith("reverted, v1 serves every user")
    assert canary_record(ds).state == "reverted" and serving(urls) == [(1, None), (1, None)]


def over_predicting(factor: float, window_start: str) -> int:
    """A version of v1 whose every prediction is `factor` times the odds (its bias moved): as good at ranking,
    worse online."""
    import dataclasses
    import math

    from keiko.algorithms import load_model_bytes

    v1 = load_model_bytes(v1_bytes())
    return register_variant(
        dataclasses.replace(v1, bias=v1.bias + math.log(factor)).to_bytes(), window_start=window_start
    )


def run_with_own_golden_set(version: int) -> dt.date:
    """candidate_day for a version whose answers are not v1's: its golden set rescored by its own artifact."""
    from keiko.contract import GOLDEN_EXPECTED, EvaluateResult
    from keiko.modeldef import load_model
    from keiko.rollout.known_answers import known_answers

    ds = candidate_day(RUN_DAY.isoformat(), version)
    store = open_store(settings())
    layout = RunLayout(store, "ctr", ds)
    golden = store.read_table(layout.golden)
    entry = open_registry(settings().registry_url).get("ctr", version)
    expected = known_answers(store, load_model("ctr"), entry, golden.drop_columns([GOLDEN_EXPECTED])).expected
    column = golden.schema.get_field_index(GOLDEN_EXPECTED)
    store.write_table(layout.golden, golden.set_column(column, GOLDEN_EXPECTED, [expected]))
    layout.write_result(layout.read_result(EvaluateResult).model_copy(update={"golden_uri": layout.golden}))
    return dt.date.fromisoformat(ds)


@pytest.fixture
def experiment(live, project_copy):
    """model.yaml's A/B settings for a test: half the users each, decided once 3,500 rows of each have outcomes."""

    def configure(apply: str) -> None:
        model_yaml = project_copy / "include" / "models" / "ctr" / "model.yaml"
        config = yaml.safe_load(model_yaml.read_text())
        config["deploy"]["ab"] = {
            "weight": 0.5, "hold_minutes": 0, "min_outcomes": 3500, "max_hold_minutes": 30, "check_every_seconds": 1,
            "apply": apply,
        }  # fmt: skip
        model_yaml.write_text(yaml.safe_dump(config, sort_keys=False))

    return configure


@pytest.mark.parametrize(
    "factor, apply, verdict, state, serves",
    [
        (6.0, "report", "stable better", "kept stable", 1),  # a real gap (~+70% logloss): the new version loses
        (1.0, "auto", "no difference", "kept stable", 1),  # the same answers: nothing to apply
    ],
)
def test_an_ab_experiment_reports_the_better_version_or_no_difference(
    live, experiment, monkeypatch, capsys, factor, apply, verdict, state, serves
):
    apps, urls, _warehouse = live
    experiment(apply)
    monkeypatch.setenv("KEIKO_RUN_PARAMS", json.dumps({"deploy_strategy": "ab"}))
    v2 = (
        over_predicting(factor, "2026-11-10")
        if factor != 1.0
        else register_variant(v1_bytes(), window_start="2026-11-10")
    )
    ds = run_with_own_golden_set(v2)
    run_steps("deploy", ds=ds.isoformat())
    assert serving(urls) == [(1, v2), (1, v2)]

    live_a_day(apps, LIVE_DAY, 8_000)
    assert run_step("canary", ds=ds.isoformat()) == 0  # an experiment's result is no failure, whichever wins
    out = capsys.readouterr().out
    record = canary_record(ds)
    assert record.state == state and record.report.startswith(f"{verdict}: online logloss")
    assert "Welch z-test, user-clustered" in record.report and "95% CI" in record.report
    assert f"A/B v{v2} (canary) against v1 (stable): {verdict}" in out
    assert serving(urls) == [(serves, None), (serves, None)]
    if factor != 1.0:  # the guards held; the distribution differs, which an experiment reports, not reverts
        checks = {c.check: c.verdict for c in record.verdicts[-1].checks}
        assert checks["error rate (5xx)"] == "pass" and checks["predictions KL"] == "differs"


def test_an_ab_experiment_set_to_apply_promotes_the_winner(live, experiment, monkeypatch):
    apps, urls, _warehouse = live
    experiment("auto")
    monkeypatch.setenv("KEIKO_RUN_PARAMS", json.dumps({"deploy_strategy": "ab"}))
    worse = over_predicting(6.0, "2026-11-10")
    # Production is the over-predicting version; the candidate is v1's weights again.
    main(["rollback", "ctr", "--to", str(worse), "--reason", "test: a worse production"])
    assert serving(urls) == [(worse, None), (worse, None)]
    better = register_variant(v1_bytes(), window_start="2026-11-11")
    ds = dt.date.fromisoformat(candidate_day(RUN_DAY.isoformat(), better))
    run_steps("deploy", ds=ds.isoformat())
    live_a_day(apps, LIVE_DAY, 8_000)
    assert run_step("canary", ds=ds.isoformat()) == 0
    record = canary_record(ds)
    assert record.state == "promoted" and record.report.startswith("canary better")
    assert open_registry(settings().registry_url).alias("ctr") == better
    assert serving(urls) == [(better, None), (better, None)]


def test_an_ab_winner_set_to_approve_waits_for_a_person_whose_choice_promote_applies(live, experiment, monkeypatch):
    apps, urls, _warehouse = live
    experiment("approve")
    monkeypatch.setenv("KEIKO_RUN_PARAMS", json.dumps({"deploy_strategy": "ab"}))
    worse = over_predicting(6.0, "2026-11-10")
    main(["rollback", "ctr", "--to", str(worse), "--reason", "test: a worse production"])
    better = register_variant(v1_bytes(), window_start="2026-11-11")
    ds = dt.date.fromisoformat(candidate_day(RUN_DAY.isoformat(), better))
    run_steps("deploy", ds=ds.isoformat())
    live_a_day(apps, LIVE_DAY, 8_000)
    assert run_step("canary", ds=ds.isoformat()) == 0
    record = canary_record(ds)
    assert record.state == "awaiting approval" and "it won the A/B experiment: canary better" in record.approval
    assert serving(urls) == [(worse, better), (worse, better)]  # the split stays while a person decides

    # `keiko run` has no person to ask: promote says how to answer, and changes nothing.
    assert run_step("promote", ds=ds.isoformat()) == EXIT_USER_ERROR
    assert serving(urls) == [(worse, better), (worse, better)]
    # What approve_promotion hands promote when alice picks Promote in the Airflow UI.
    monkeypatch.setenv("KEIKO_APPROVAL", "Promote")
    monkeypatch.setenv("KEIKO_APPROVED_BY", "alice")
    assert run_step("promote", ds=ds.isoformat()) == 0
    record = canary_record(ds)
    assert record.state == "promoted" and record.approval.endswith("alice chose Promote.")
    assert open_registry(settings().registry_url).alias("ctr") == better
    assert serving(urls) == [(better, None), (better, None)]
    assert run_step("promote", ds=ds.isoformat()) == EXIT_SKIPPED  # decided: nothing awaits any more
