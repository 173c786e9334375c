"""Every task of every model's DAG, with KEIKO_STAGE_RUNNER=kubernetes, renders a valid pod that runs its stage."""

import copy
import json
from types import SimpleNamespace

import kubernetes_validate
import pytest
from kubernetes.client import ApiClient

from conftest import DS
from keiko.dag_factory import build_dags
from keiko.errors import KeikoError
from keiko.modeldef import load_model, model_names
from keiko.operators.pod import XCOM_RESULT_FILE, KeikoPodOperator
from keiko.pipeline import PIPELINE

KUBERNETES_VERSION = "1.33"  # as tests/deploy/test_k8s_manifests.py
RUN_ID = "scheduled__2026-11-21T02:00:00+00:00"
IMAGE = "registry.example.com/keiko:1.4.0"


@pytest.fixture
def pod_dags(monkeypatch):
    monkeypatch.setenv("KEIKO_STAGE_RUNNER", "kubernetes")
    monkeypatch.setenv("KEIKO_IMAGE", IMAGE)
    monkeypatch.setenv("KEIKO_K8S_NAMESPACE", "ml-keiko")
    return build_dags()


def render(task) -> dict:
    """The pod the task would create for the run of DS, as the API server would receive it."""
    ti = SimpleNamespace(
        dag_id=task.dag_id, task_id=task.task_id, map_index=-1, try_number=1, max_tries=3, xcom_pull=lambda **_: None
    )
    context = {
        "ds": DS,
        "run_id": RUN_ID,
        "dag": task.dag,
        "ti": ti,
        "dag_run": SimpleNamespace(run_type="scheduled"),
        "params": {"deploy": "auto"},
    }
    task.render_template_fields(context)
    pod = task.build_pod_request_obj(context, dry_run=True)
    return ApiClient().sanitize_for_serialization(pod)


CASES = [(model, step.task_id, step.kind) for model in model_names() for step in PIPELINE]


@pytest.mark.parametrize(("model", "task_id", "kind"), CASES)
def test_every_task_renders_a_valid_pod_running_its_stage(pod_dags, model, task_id, kind):
    task = pod_dags[f"keiko_{model}"].get_task(task_id)
    assert isinstance(task, KeikoPodOperator)
    pod = render(task)
    kubernetes_validate.validate(pod, KUBERNETES_VERSION, strict=True)

    (container, *sidecars) = pod["spec"]["containers"]
    stage = task_id.removeprefix("gate_")
    assert container["command"] == ["keiko"]
    assert container["args"] == [kind, stage, "--model", model, "--ds", DS]
    assert container["image"] == IMAGE
    assert pod["metadata"]["namespace"] == "ml-keiko"
    assert pod["spec"]["serviceAccountName"] == "keiko-stage"
    assert pod["metadata"]["labels"]["keiko.io/model"] == model

    expected = load_model(model).config.pod(task_id)
    assert container["resources"].get("requests", {}) == expected.requests
    assert container["resources"].get("limits", {}) == expected.limits
    assert pod["spec"].get("nodeSelector", {}) == expected.node_selector
    assert len(pod["spec"].get("tolerations", [])) == len(expected.tolerations)

    env = {e["name"]: e["value"] for e in container["env"]}
    assert env["KEIKO_RUN_ID"] == RUN_ID
    assert env["KEIKO_RUN_TYPE"] == "scheduled"
    assert json.loads(env["KEIKO_RUN_PARAMS"])["deploy"] == "auto"
    assert env["KEIKO_RESULT_FILE"] == XCOM_RESULT_FILE
    assert env["KEIKO_RETRIES_LEFT"] == "2"  # first of 3 tries: a retryable failure reads "retrying"
    assert {s.get("configMapRef", s.get("secretRef"))["name"] for s in container["envFrom"]} == {
        "keiko-config",
        "keiko-env",
    }
    assert [s["name"] for s in sidecars] == ["airflow-xcom-sidecar"]  # the result comes back as XCom
    assert task.on_finish_action.value == "delete_succeeded_pod"  # failed pods stay for inspection
    assert task.skip_on_exit_code == [99]
    assert task.retries == (0 if kind == "gate" else 2)


def test_training_goes_to_spot_nodes_and_tolerates_them(pod_dags):
    pod = render(pod_dags["keiko_ctr"].get_task("train"))
    assert pod["spec"]["nodeSelector"] == {"karpenter.sh/capacity-type": "spot"}
    assert pod["spec"]["tolerations"] == [{"key": "spot", "operator": "Equal", "value": "true", "effect": "NoSchedule"}]
    extract = render(pod_dags["keiko_ctr"].get_task("extract"))
    assert not extract["spec"].get("nodeSelector") and not extract["spec"].get("tolerations")


def test_a_broken_pod_is_rejected_by_the_schema(pod_dags):
    """The schema check can fail: a pod whose memory request is not a quantity."""
    pod = copy.deepcopy(render(pod_dags["keiko_ctr"].get_task("extract")))
    pod["spec"]["containers"][0]["resources"]["requests"]["memory"] = {"gigabytes": 3}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(pod, KUBERNETES_VERSION, strict=True)


def test_every_templated_field_renders(pod_dags):
    task = pod_dags["keiko_ctr"].get_task("gate_raw")
    render(task)
    for field in task.template_fields:
        value = getattr(task, field)
        assert "{{" not in repr(value), f"{field} did not render: {value!r}"


def test_local_runner_is_the_default(monkeypatch):
    monkeypatch.delenv("KEIKO_STAGE_RUNNER", raising=False)
    assert type(build_dags()["keiko_ctr"].get_task("train")).__name__ == "KeikoStageOperator"


def test_an_unknown_runner_fails_the_dag_file_naming_the_setting(monkeypatch):
    monkeypatch.setenv("KEIKO_STAGE_RUNNER", "ecs")
    with pytest.raises(KeikoError, match=r"KEIKO_STAGE_RUNNER='ecs': expected one of local, kubernetes"):
        build_dags()


def test_invalid_run_params_fail_the_task_before_a_pod_is_asked_for(pod_dags):
    from airflow.sdk.exceptions import AirflowFailException

    task = pod_dags["keiko_cvr"].get_task("train")
    with pytest.raises(AirflowFailException, match=r"run parameter depth=99: 99 is greater than the maximum of 10"):
        task.execute({"run_id": RUN_ID, "params": {"depth": 99}})


@pytest.mark.parametrize(("code", "retried"), [(1, True), (75, True), (137, True), (2, False), (3, False)], ids=str)
def test_a_failed_pod_is_retried_only_for_infrastructure(pod_dags, monkeypatch, code, retried):
    """As the local operator: the provider's failure, turned into one without retries for exit 2 and 3."""
    from airflow.providers.cncf.kubernetes.operators.pod import KubernetesPodOperator
    from airflow.sdk.exceptions import AirflowException, AirflowFailException
    from kubernetes.client import models as k8s

    def provider_cleanup(self, pod, remote_pod, *args, **kwargs):
        raise AirflowException(f"Pod {pod.metadata.name} returned a failure.")

    monkeypatch.setattr(KubernetesPodOperator, "cleanup", provider_cleanup)
    task = pod_dags["keiko_ctr"].get_task("extract")
    terminated = k8s.V1ContainerState(terminated=k8s.V1ContainerStateTerminated(exit_code=code))
    remote = k8s.V1Pod(status=k8s.V1PodStatus(container_statuses=[
        k8s.V1ContainerStatus(name="base", state=terminated, image="i", image_id="", ready=False, restart_count=0)
    ]))  # fmt: skip
    pod = k8s.V1Pod(metadata=k8s.V1ObjectMeta(name="keiko-ctr-extract"))
    with pytest.raises(AirflowException, match="keiko-ctr-extract returned a failure") as failed:
        task.cleanup(pod, remote)
    assert isinstance(failed.value, AirflowFailException) is not retried
