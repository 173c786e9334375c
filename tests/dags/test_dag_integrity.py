"""DAG policy as tests: every model folder yields a clean, documented, owned, retried DAG."""

import datetime as dt
import json
import re
import subprocess
import sys
from types import SimpleNamespace

import pytest
from airflow.dag_processing.dagbag import DagBag
from airflow.sdk import AssetAlias
from airflow.sdk.api.datamodels._generated import DagRunType
from airflow.sdk.definitions.param import ParamValidationError
from airflow.sdk.execution_time import macros

from conftest import ROOT
from keiko.modeldef import load_model, model_names
from keiko.stages.context import _run_type

HEAVY_MODULES = ("great_expectations", "catboost", "sklearn", "scipy", "duckdb")


@pytest.fixture(scope="module")
def dagbag():
    return DagBag(dag_folder=str(ROOT / "dags"))


def test_no_import_errors(dagbag):
    assert dagbag.import_errors == {}


def test_two_dags_per_model_folder(dagbag):
    assert set(dagbag.dag_ids) == {f"keiko_{k}{name}" for name in model_names() for k in ("", "monitor_")}


@pytest.mark.parametrize("model", model_names())
def test_the_monitor_dag_waits_deferred_for_each_source_then_judges_the_attributed_day(dagbag, model):
    dag = dagbag.dags[f"keiko_monitor_{model}"]
    config = load_model(model).config
    waits = {f"wait_for_{table}" for table in config.sources}
    join = dag.get_task("join_outcomes")
    assert {t.task_id for t in join.upstream_list} == waits
    assert {t.task_id for t in join.downstream_list} == {"gate_online", "gate_drift", "gate_volume"}
    for task_id in waits:
        sensor = dag.get_task(task_id)
        assert sensor.deferrable and sensor.retries == 0  # in the triggerer while it waits: no worker slot
        assert sensor.timeout == config.monitor.wait_hours * 3600
    assert "keiko" in dag.tags and "monitor" in dag.tags and f"model:{model}" in dag.tags
    assert dag.doc_md and "Triage" in dag.doc_md and config.owner in dag.doc_md
    assert dag.max_active_runs == 1 and not dag.catchup
    for task in dag.tasks:
        assert task.owner == config.owner
        if task.task_id in waits:
            continue
        assert f"| `{task.task_id}` |" in dag.doc_md and f"- *{task.task_id} failed*:" in dag.doc_md
        assert task.retries == (0 if task.task_id.startswith("gate_") else 2), task.task_id
        context = {"ds": "2026-11-24", "dag_run": SimpleNamespace(run_type=DagRunType.SCHEDULED), "macros": macros}
        task.render_template_fields(context)
        judged = dt.date(2026, 11, 24) - dt.timedelta(days=config.monitor_lag_days)
        assert task.ds == judged.isoformat() and task.command[3:] == [
            task.kind,
            task.stage,
            "--model",
            model,
            "--ds",
            judged.isoformat(),
        ]
    # clicks within 1 h, conversions within 72 h, purchases within the 7 days after a user's day
    assert config.monitor_lag_days == {"ctr": 0, "cvr": 3, "user_value": 7}[model]


@pytest.mark.parametrize("model", model_names())
def test_dag_shape_and_policy(dagbag, model):
    dag = dagbag.dags[f"keiko_{model}"]
    config = load_model(model).config
    chain = [dag.get_task("wait_for_data")]
    while chain[-1].downstream_list:
        downstream = chain[-1].downstream_list
        # The next link is the downstream task that no other downstream task leads to.
        (nxt,) = [t for t in downstream if not any(t in o.get_flat_relatives() for o in downstream if o is not t)]
        chain.append(nxt)
    assert [t.task_id for t in chain] == [
        "wait_for_data", "extract", "gate_raw", "features", "gate_features", "train", "gate_training",
        "evaluate", "gate_evaluation", "register", "batch_score", "gate_batch", "deploy", "gate_serving", "canary",
        "approve_promotion", "promote", "rollback",
    ]  # fmt: skip
    assert len(dag.tasks) == len(chain)
    # The data first, deferred: its timeout is model.yaml's, and a timeout is final (no retries).
    wait = dag.get_task("wait_for_data")
    assert wait.timeout == config.run.wait_for_data_hours * 3600 and wait.retries == 0
    # A run still going deadline_hours after it was queued alerts, through keiko's webhook.
    (deadline,) = dag.deadline
    assert deadline.interval == dt.timedelta(hours=config.run.deadline_hours)
    assert deadline.callback.path == "keiko.alerts.on_deadline_missed" and deadline.callback.kwargs == {"model": model}
    # What may move production publishes the model's Asset through an alias, when it moved it (keiko.assets).
    assert [t.task_id for t in dag.tasks if t.outlets] == ["deploy", "canary", "promote", "rollback"]
    assert all(t.outlets == [AssetAlias(f"keiko-{model}-production-moves")] for t in dag.tasks if t.outlets)
    # A canary waits between its analyses deferred; its plan, not the stage timeout, bounds it.
    canary = dag.get_task("canary")
    assert canary.repeat and canary.execution_timeout is None
    # register records an unblessed candidate as rejected: it runs once evaluate and the gate are done.
    register = dag.get_task("register")
    assert register.trigger_rule == "all_done_min_one_success"
    assert {t.task_id for t in register.upstream_list} == {"evaluate", "gate_evaluation"}
    # deploy runs after register once a batch model's batch passed its gate, or an online model skipped both steps.
    deploy = dag.get_task("deploy")
    assert deploy.trigger_rule == "none_failed_min_one_success"
    assert {t.task_id for t in deploy.upstream_list} == {"gate_batch", "register"}
    # rollback reverts production after a failed gate_serving: a visible task, not a side effect of the check.
    rollback = dag.get_task("rollback")
    assert rollback.trigger_rule == "one_failed" and rollback.is_teardown  # gate_serving decides the run's state
    assert {t.task_id for t in rollback.upstream_list} == {"gate_serving", "canary", "promote"}
    # A promotion a person decides: Airflow's human-in-the-loop task, Keep stable when nobody answers in time.
    approval = dag.get_task("approve_promotion")
    assert approval.options == ["Promote", "Keep stable"] and approval.defaults == ["Keep stable"]
    assert approval.response_timeout == dt.timedelta(hours=config.deploy.approval_hours)
    assert [t.task_id for t in approval.upstream_list] == ["canary"]
    assert [t.task_id for t in dag.get_task("promote").upstream_list] == ["approve_promotion"]
    assert "keiko" in dag.tags and f"model:{model}" in dag.tags
    assert dag.doc_md and "Triage" in dag.doc_md and config.owner in dag.doc_md
    for task in dag.tasks:  # the doc's step table and triage list name every task
        assert f"| `{task.task_id}` |" in dag.doc_md and f"- *{task.task_id} failed*:" in dag.doc_md
    assert dag.max_active_runs == 1 and not dag.catchup
    for task in dag.tasks:
        assert task.owner == config.owner
        if task is wait or task is canary or task is approval:
            continue
        assert task.execution_timeout is not None
        if task.task_id.startswith("gate_"):
            assert task.retries == 0 and task.command[3] == "gate", task.task_id  # deterministic: no retries
        else:
            assert task.retries >= 1 and task.command[3] == "stage", task.task_id


@pytest.mark.parametrize("model", model_names())
def test_every_templated_field_renders(dagbag, model):
    dag = dagbag.dags[f"keiko_{model}"]
    params = {**dag.params.dump(), "deploy": "skip", "reason": 'it\'s <late> & "quoted"'}
    # The run type as a task's context has it: the SDK's enum, which renders as "DagRunType.BACKFILL".
    run = SimpleNamespace(run_type=DagRunType.BACKFILL)
    answer = {"chosen_options": ["Keep stable"], "responded_by_user": {"id": "7", "name": "alice"}}
    ti = SimpleNamespace(xcom_pull=lambda task_ids: answer if task_ids == "approve_promotion" else None)
    context = {"ds": "2026-11-21", "dag_run": run, "params": params, "ti": ti}
    for task in dag.tasks:
        task.render_template_fields(context)
        assert task.model == model
        if task.task_id in ("wait_for_data", "approve_promotion"):
            continue
        assert task.ds == "2026-11-21"
        if task.task_id == "promote":  # the person's answer, as approve_promotion's XCom has it
            assert (task.env.pop("KEIKO_APPROVAL"), task.env.pop("KEIKO_APPROVED_BY")) == ("Keep stable", "alice")
        assert task.env.keys() == {"KEIKO_RUN_TYPE", "KEIKO_RUN_PARAMS"}
        assert _run_type(task.env["KEIKO_RUN_TYPE"]) == "backfill"  # what the stage makes of it
        assert json.loads(task.env["KEIKO_RUN_PARAMS"]) == params  # what the stage validates again


@pytest.mark.parametrize("model", model_names())
def test_the_trigger_form_has_every_run_param_and_the_overrides_model_yaml_allows(dagbag, model):
    config = load_model(model).config
    params = dagbag.dags[f"keiko_{model}"].params
    assert list(params) == ["deploy", "deploy_strategy", "reason", "window_days", *config.algorithm.overridable]
    for name in params:
        param = params.get_param(name)
        assert param.description, name  # the form's help text
        assert param.schema["section"] in ("Run", f"Algorithm: {config.algorithm.name}"), name
    assert params["window_days"] == config.window_days
    # Only what has no sensible default is required: the form leaves Trigger disabled until a required field is set.
    assert params.get_param("reason").resolve(None) is None and params.get_param("reason").resolve("") == ""
    assert {name: params[name] for name in config.algorithm.overridable} == {
        name: config.algorithm.params[name] for name in config.algorithm.overridable
    }


@pytest.mark.parametrize(
    "name, value",
    [("deploy", "sometimes"), ("window_days", 2), ("window_days", "7"), ("reason", "x" * 501), ("reason", 5)],
)
@pytest.mark.parametrize("model", model_names())
def test_the_run_params_refuse_invalid_values(dagbag, model, name, value):
    param = dagbag.dags[f"keiko_{model}"].params.get_param(name)
    with pytest.raises(ParamValidationError):
        param.resolve(value)


@pytest.mark.parametrize("model", model_names())
def test_the_algorithm_overrides_refuse_values_outside_model_yaml_bounds(dagbag, model):
    params = dagbag.dags[f"keiko_{model}"].params
    for name, override in load_model(model).config.algorithm.overridable.items():
        too_big = (override.maximum or override.exclusiveMaximum) + 1
        with pytest.raises(ParamValidationError):
            params.get_param(name).resolve(too_big)
        with pytest.raises(ParamValidationError):
            params.get_param(name).resolve("a string")


def test_parsing_imports_no_training_or_validation_libraries():
    code = (
        "import sys, json; from airflow.dag_processing.dagbag import DagBag;"
        f"bag = DagBag(dag_folder={str(ROOT / 'dags')!r});"
        f"print(json.dumps([len(bag.dags), [m for m in {HEAVY_MODULES!r} if m in sys.modules]]))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    n_dags, heavy = json.loads(out.strip().splitlines()[-1])
    assert n_dags == 2 * len(model_names())
    assert heavy == []


def test_a_broken_model_yaml_is_an_import_error_naming_file_and_field(project_copy):
    path = project_copy / "include" / "models" / "ctr" / "model.yaml"
    path.write_text(re.sub(r"^window_days: *\d+", "window_days: seven", path.read_text(), flags=re.M))
    bag = DagBag(dag_folder=str(ROOT / "dags"))
    (message,) = bag.import_errors.values()
    assert str(path) in message and "window_days" in message
