"""`keiko why <model> <ds>` says in a few lines why a day's run did or did not reach production."""

from __future__ import annotations

import json
import re

import pytest

from conftest import DS, run_step, run_steps, serve_in_thread
from keiko.cli import main
from keiko.config import settings
from keiko.contract import Blessing, EvaluationGateResult, GateOutcome, ProductionChange
from keiko.oncall.why import RunFacts, explain
from keiko.process import EXIT_GATE_FAILED, EXIT_SKIPPED, EXIT_USER_ERROR
from keiko.registry import ModelVersion, open_registry
from keiko.runs import RunRecord, StepRecord
from keiko.serving.app import create_app

MAX_LINES = 8


def why(capsys: pytest.CaptureFixture, ds: str = DS) -> list[str]:
    capsys.readouterr()
    assert main(["why", "ctr", ds]) == 0
    lines = capsys.readouterr().out.rstrip("\n").split("\n")
    assert len(lines) <= MAX_LINES, lines
    return lines


@pytest.fixture
def live_server(run_home, monkeypatch):
    with serve_in_thread(create_app("ctr")) as url:
        monkeypatch.setenv("KEIKO_SERVING_URLS_CTR", url)
        yield url


@pytest.mark.server
def test_a_promoted_run_names_the_version_and_what_it_replaced(live_server, capsys):
    run_steps("deploy", "gate_serving")
    assert run_step("canary") == EXIT_SKIPPED  # a rolling deploy: no canary to judge
    lines = why(capsys)
    moved_at = open_registry(settings().registry_url).history("ctr")[-1]["at"]
    assert lines[0].startswith(f"ctr {DS}: PROMOTED: v1 became production at {moved_at[:10]} ")
    assert lines[0].endswith("(previous: none)")
    assert "blessing: all 6 checks passed (no production model: absolute only)" in lines[1]
    assert "rolled out to 1 replica(s); gate_serving passed on the live replicas" in lines[2]
    assert ", complete, last step " in lines[-1] and lines[-1].endswith("; production now: v1")


def test_a_failed_gate_names_the_expectation_observed_and_allowed(run_home, project_copy, monkeypatch, capsys):
    # The model's own expectation: positions 1..2 only; the synthetic DSP logs have 1..4.
    expectation = {"column": "position", "min_value": 1, "max_value": 2}
    suite = {"expectations": [{"type": "expect_column_values_to_be_between", "kwargs": expectation}]}
    (project_copy / "include/models/ctr/expectations/raw.impressions.ranges.json").write_text(json.dumps(suite))
    monkeypatch.setenv("KEIKO_RUN_ID", "scheduled__rerun")  # a new run of the day: register's steps are not its
    run_steps("extract")
    assert run_step("gate_raw") == EXIT_GATE_FAILED

    lines = why(capsys)
    assert re.fullmatch(rf"ctr {DS}: NOT promoted: gate_raw failed 8 of \d+ expectations", lines[0]), lines[0]
    assert lines[1].startswith("  impressions.ranges dt=2026-11-14: column_values_to_be_between on position: observed ")
    assert lines[1].endswith("; allowed [1, 2]")
    assert "unexpected (" in lines[1]  # how many rows, and their share
    assert lines[4].startswith("  5 more failed; Data Docs: file://")  # after the first three failed expectations
    assert lines[4].endswith("/gates/raw/data_docs/index.html")
    assert lines[-1].startswith("  run scheduled__rerun, failed, last step ")
    assert lines[-1].endswith("production now: none")


@pytest.mark.server
def test_a_candidate_worse_than_production_is_explained_by_that_comparison(
    live_server, project_copy, monkeypatch, capsys
):
    run_steps("deploy")  # production: v1
    path = project_copy / "include" / "models" / "ctr" / "model.yaml"
    # A slightly worse candidate (as in test_deploy.py): 1,024 hash buckets for 14 slots collide.
    path.write_text(path.read_text().replace("hash_bits: 20", "hash_bits: 10"))
    monkeypatch.setenv("KEIKO_RUN_ID", "manual__hash_bits_10")
    run_steps("features", "train", "evaluate")
    assert run_step("gate_evaluation") == EXIT_GATE_FAILED
    run_steps("register")  # the DAG runs it after a failed gate_evaluation too: v2 is recorded as rejected
    assert run_step("deploy") == EXIT_SKIPPED

    lines = why(capsys)
    assert lines[0] == f"ctr {DS}: NOT promoted: the candidate is worse than production v1 on the same test day"
    assert lines[1].startswith("  logloss_regression: observed ")
    assert "; allowed [-inf, 0.005] (logloss " in lines[1] and " vs production's " in lines[1]
    assert lines[2] == "  registered as v2 (rejected); deploy skipped"
    assert lines[-1].endswith("production now: v1")


def test_a_run_that_asked_deploy_skip_is_registered_but_not_deployed(run_home, monkeypatch, capsys):
    monkeypatch.setenv("KEIKO_RUN_PARAMS", '{"deploy": "skip"}')
    assert run_step("deploy") == EXIT_SKIPPED

    lines = why(capsys)
    assert lines[0] == f"ctr {DS}: NOT promoted: v1 is registered but was not deployed"
    assert (
        lines[1]
        == "  deploy skipped: ctr v1 not deployed: the run asked deploy=skip; there is no production version yet"
    )
    # Airflow skips gate_serving after a skipped deploy without running it: the run is over, not "incomplete".
    assert ", complete, " in lines[-1] and lines[-1].endswith("production now: none")


def test_a_deploy_skip_rerun_of_the_version_that_serves_says_so(run_home, monkeypatch, capsys):
    """Not "NOT promoted": the day's model is production already, and the rerun left it there."""
    open_registry(settings().registry_url).move_alias("ctr", 1)
    monkeypatch.setenv("KEIKO_RUN_PARAMS", '{"deploy": "skip"}')
    assert run_step("deploy") == EXIT_SKIPPED

    lines = why(capsys)
    assert lines[0] == f"ctr {DS}: v1 is production already; this run skipped deploy and changed nothing"
    assert lines[1] == "  ctr v1 not deployed: the run asked deploy=skip; production stays v1"
    assert lines[-1].endswith("production now: v1")


def test_an_unknown_model_or_a_day_without_a_run_is_one_line_and_exit_2(run_home, capsys):
    assert main(["why", "nope", DS]) == EXIT_USER_ERROR
    assert "unknown model 'nope'" in capsys.readouterr().err
    assert main(["why", "ctr", "2026-11-01"]) == EXIT_USER_ERROR
    err = capsys.readouterr().err
    assert err.startswith("keiko: error: no run of ctr for 2026-11-01: no step recorded under file://")
    assert err.count("\n") == 1


# The branches below are pure functions of the run's record: no pipeline needed.


def step(task_id: str, outcome: str = "success", message: str = "") -> StepRecord:
    return StepRecord(task_id, outcome, message or f"{task_id} done", "manual__1", "2026-11-22T02:00:00+00:00",
                      "2026-11-22T02:01:00+00:00", 60.0)  # fmt: skip


def run(*steps: StepRecord) -> RunRecord:
    return RunRecord("ctr", DS, "manual__1", {s.task_id: s for s in steps})


UP_TO_REGISTER = [step(t) for t in ("extract", "gate_raw", "features", "gate_features", "train", "gate_training",
                                    "evaluate", "gate_evaluation", "register")]  # fmt: skip


def version(status: str = "registered", reason: str = "") -> ModelVersion:
    return ModelVersion("ctr", 2, status, DS, "2026-11-14", DS, "file:///m.npz", "ab" * 32, "0.1", "c", "f",
                        "hashed_logistic_regression", {}, reason, "manual__1", "2026-11-22T02:01:00+00:00")  # fmt: skip


def test_a_failed_deploy_says_the_reason_and_that_the_replicas_went_back():
    message = "rollout of v2 failed on http://10.0.0.2:8080: unreachable; rolled back 1 replica(s) to v1"
    deploy = ProductionChange(
        model="ctr", action="deploy", from_version=1, to_version=2, reason="", requested_by="deploy of ctr v2",
        backend="local", replicas=["http://10.0.0.1:8080", "http://10.0.0.2:8080"], started_at="", finished_at="",
        success=False, message=message, rolled_back=True, alias_moved=False, events=[], record_uri="",
    )  # fmt: skip
    facts = RunFacts(
        "ctr", DS, run(*UP_TO_REGISTER, step("deploy", "failed", message)), production=1, version=version(),
        deploy=deploy,
    )  # fmt: skip
    assert explain(facts)[:3] == [
        f"ctr {DS}: NOT promoted: deploy of v2 failed",
        f"  {message}",
        "  replicas rolled back to v1; the production alias did not move",
    ]


def test_a_candidate_can_miss_a_threshold_and_lose_to_production_at_once():
    outcomes = [
        GateOutcome(suite="blessing", expectation="expect_column_values_to_be_between", column=column,
                    observed=observed, expected=expected, passed=False)
        for column, observed, expected in (("auc", "0.649963", "[0.65, inf]"),
                                           ("logloss_regression", "0.0151204", "[-inf, 0.005]"))
    ]  # fmt: skip
    gate = EvaluationGateResult(
        gate="evaluation", success=False, expectations=8, failed=2, outcomes=outcomes, data_docs="", blessed=False
    )
    blessing = Blessing(blessed=False, reasons=[], model_sha256="", evaluation_sha256="", production_version=1,
                        metrics={}, judged_at="")  # fmt: skip
    facts = RunFacts(
        "ctr", DS, run(*UP_TO_REGISTER[:7], step("gate_evaluation", "failed", "gate_evaluation failed 2/8")),
        production=1, gate=gate, blessing=blessing,
    )  # fmt: skip
    assert explain(facts)[:4] == [
        f"ctr {DS}: NOT promoted: the candidate missed model.yaml's absolute thresholds and is worse than "
        "production v1 on the same test day",
        "  auc: observed 0.649963; allowed [0.65, inf]",
        "  logloss_regression: observed 0.0151204; allowed [-inf, 0.005]",
        "  run manual__1, failed, last step 2026-11-22 02:01 UTC; production now: v1",
    ]


def test_history_is_never_deployed_and_says_why():
    facts = RunFacts(
        "ctr", DS, run(*UP_TO_REGISTER, step("deploy", "skipped", "ctr v2 not deployed: historical: ...")),
        production=1, version=version("historical", "a backfill run: backfills never deploy"),
    )  # fmt: skip
    assert explain(facts)[:2] == [
        f"ctr {DS}: NOT promoted: v2 is history, which never deploys",
        "  because a backfill run: backfills never deploy",
    ]


def test_an_unfinished_run_says_which_step_it_reached():
    lines = explain(RunFacts("ctr", DS, run(*UP_TO_REGISTER[:5]), production=None))
    assert lines[0] == f"ctr {DS}: not finished: reached train (success at 2026-11-22 02:01 UTC)"
    assert lines[1].startswith("  next: gate_training: ")
    assert lines[2] == "  run manual__1, incomplete, last step 2026-11-22 02:01 UTC; production now: none"
