"""DAG policy as tests: every model folder yields a clean, documented, owned, retried DAG."""

import json
import re
import subprocess
import sys
from types import SimpleNamespace

import pytest
from airflow.dag_processing.dagbag import DagBag
from airflow.sdk.definitions.param import ParamValidationError

from conftest import ROOT
from keiko.modeldef import load_model, model_names

HEAVY_MODULES = ("great_expectations", "catboost", "sklearn", "scipy", "duckdb")


@pytest.fixture(scope="module")
def dagbag():
    return DagBag(dag_folder=str(ROOT / "dags"))


def test_no_import_errors(dagbag):
    assert dagbag.import_errors == {}


def test_one_dag_per_model_folder(dagbag):
    assert set(dagbag.dag_ids) == {f"keiko_{name}" for name in model_names()}


@pytest.mark.parametrize("model", model_names())
def test_dag_shape_and_policy(dagbag, model):
    dag = dagbag.dags[f"keiko_{model}"]
    config = load_model(model).config
    chain = [dag.get_task("extract")]
    while chain[-1].downstream_list:
        downstream = chain[-1].downstream_list
        # The next link is the downstream task that no other downstream task leads to.
        (nxt,) = [t for t in downstream if not any(t in o.get_flat_relatives() for o in downstream if o is not t)]
        chain.append(nxt)
    assert [t.task_id for t in chain] == [
        "extract", "gate_raw", "features", "gate_features", "train", "gate_training",
        "evaluate", "gate_evaluation", "register", "deploy", "gate_serving",
    ]  # fmt: skip
    assert len(dag.tasks) == len(chain)
    # register records an unblessed candidate as rejected: it runs once evaluate and the gate are done.
    register = dag.get_task("register")
    assert register.trigger_rule == "all_done_min_one_success"
    assert {t.task_id for t in register.upstream_list} == {"evaluate", "gate_evaluation"}
    assert "keiko" in dag.tags and f"model:{model}" in dag.tags
    assert dag.doc_md and "Triage" in dag.doc_md and config.owner in dag.doc_md
    assert dag.max_active_runs == 1 and not dag.catchup
    for task in dag.tasks:
        assert task.owner == config.owner
        assert task.execution_timeout is not None
        if task.task_id.startswith("gate_"):
            assert task.retries == 0 and task.command[3] == "gate", task.task_id  # deterministic: no retries
        else:
            assert task.retries >= 1 and task.command[3] == "stage", task.task_id


@pytest.mark.parametrize("model", model_names())
def test_every_templated_field_renders(dagbag, model):
    context = {"ds": "2026-11-21", "dag_run": SimpleNamespace(run_type="backfill"), "params": {"deploy": "skip"}}
    for task in dagbag.dags[f"keiko_{model}"].tasks:
        task.render_template_fields(context)
        assert task.ds == "2026-11-21" and task.model == model
        assert task.env == {"KEIKO_RUN_TYPE": "backfill", "KEIKO_DEPLOY": "skip"}


@pytest.mark.parametrize("model", model_names())
def test_the_deploy_param_refuses_unknown_values(dagbag, model):
    param = dagbag.dags[f"keiko_{model}"].params.get_param("deploy")
    assert param.value == "auto" and param.resolve("force") == "force"
    with pytest.raises(ParamValidationError, match="sometimes"):
        param.resolve("sometimes")


def test_parsing_imports_no_training_or_validation_libraries():
    code = (
        "import sys, json; from airflow.dag_processing.dagbag import DagBag;"
        f"bag = DagBag(dag_folder={str(ROOT / 'dags')!r});"
        f"print(json.dumps([len(bag.dags), [m for m in {HEAVY_MODULES!r} if m in sys.modules]]))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    n_dags, heavy = json.loads(out.strip().splitlines()[-1])
    assert n_dags == len(model_names())
    assert heavy == []


def test_a_broken_model_yaml_is_an_import_error_naming_file_and_field(project_copy):
    path = project_copy / "include" / "models" / "ctr" / "model.yaml"
    path.write_text(re.sub(r"^window_days: *\d+", "window_days: seven", path.read_text(), flags=re.M))
    bag = DagBag(dag_folder=str(ROOT / "dags"))
    (message,) = bag.import_errors.values()
    assert str(path) in message and "window_days" in message
