"""The model server's Kubernetes manifests: valid against the Kubernetes API schema (no cluster here),
and wired the way the rollout relies on: probes, zero-unavailable updates, selectors, the patched env."""

import copy
from pathlib import Path

import kubernetes_validate
import pytest
import yaml

from keiko.config import settings
from keiko.modeldef import load_model, model_names
from keiko.rollout.kubernetes import (
    CANARY_ANNOTATIONS,
    CANARY_ENVS,
    CONTAINER,
    VERSION_ANNOTATION,
    VERSION_ENV,
    split_patch,
    version_patch,
)
from keiko.serving.split import TrafficSplit

K8S_DIR = Path(__file__).resolve().parents[2] / "deploy" / "k8s"
# The oldest API the manifests are meant for (kubernetes-validate 1.37.0 ships schemas up to 1.37); the
# preStop `sleep` action needs >= 1.30.
KUBERNETES_VERSION = "1.33"
SERVER_KINDS = ("Deployment", "Service", "PodDisruptionBudget")


def validate(document: dict) -> None:
    """Raise kubernetes_validate.ValidationError unless `document` is a valid object; strict: unknown
    fields fail too (kubectl apply would drop them, or refuse them with --validate=strict)."""
    kubernetes_validate.validate(document, KUBERNETES_VERSION, strict=True)


def documents() -> list[dict]:
    found = []
    for path in sorted(K8S_DIR.glob("*.yaml")):
        if path.name != "kustomization.yaml":
            found.extend(doc for doc in yaml.safe_load_all(path.read_text()) if doc)
    return found


@pytest.fixture(params=model_names())
def manifests(request) -> dict[str, dict]:
    """One model's server objects by kind: its Deployment, Service and PodDisruptionBudget."""
    name = settings().server_deployment(request.param)
    objects = {d["kind"]: d for d in documents() if d["metadata"]["name"] == name}
    assert set(objects) == {"Deployment", "Service", "PodDisruptionBudget"}, f"{name}: model server objects"
    return {**objects, "model": request.param, "serving": load_model(request.param).config.serving}


def test_every_manifest_is_valid_against_the_kubernetes_schema():
    objects = documents()
    servers = [f"{kind}/{settings().server_deployment(m)}" for m in model_names() for kind in SERVER_KINDS]
    assert sorted(f"{d['kind']}/{d['metadata']['name']}" for d in objects) == sorted(
        [
            *servers,  # every model's server
            "ConfigMap/keiko-config",
            "Role/keiko-deployer",
            "Role/keiko-pod-launcher",
            "RoleBinding/airflow-worker-keiko-pods",
            "RoleBinding/keiko-stage-deployer",
            "ServiceAccount/keiko-stage",
        ]
    )
    for doc in objects:
        validate(doc)
        assert doc["metadata"]["namespace"] == "keiko"


def test_the_configmap_names_only_known_settings_and_the_stage_runner_defaults_match():
    """Every key is a setting keiko reads (or boto's region); the pods' names are config's defaults."""
    from keiko.config import SETTINGS

    (configmap,) = [d for d in documents() if d["kind"] == "ConfigMap"]
    known = {s.env for s in SETTINGS} | {"AWS_DEFAULT_REGION"}
    assert set(configmap["data"]) <= known
    defaults = settings()
    assert configmap["metadata"]["name"] == defaults.kubernetes_configmap
    names = {d["metadata"]["name"] for d in documents()}
    assert defaults.kubernetes_service_account in names


# The Kubernetes API calls of KubernetesRollout -> the (resource, verb) RBAC must allow for them.
API_CALL_PERMISSIONS = {
    "read_namespaced_deployment": ("deployments", "get"),
    "read_namespaced_deployment_status": ("deployments/status", "get"),
    "patch_namespaced_deployment": ("deployments", "patch"),
    "list_namespaced_replica_set": ("replicasets", "list"),
}


def test_the_deploy_stage_may_do_what_the_rollout_does_and_no_more():
    import re

    import keiko.rollout.kubernetes as rollout

    calls = set(re.findall(r"apps_api\.(\w+)\(", Path(rollout.__file__).read_text()))
    assert calls <= set(API_CALL_PERMISSIONS), f"new API calls need RBAC: {calls - set(API_CALL_PERMISSIONS)}"
    (role,) = [d for d in documents() if d["kind"] == "Role" and d["metadata"]["name"] == "keiko-deployer"]
    allowed = {(r, v) for rule in role["rules"] for r in rule["resources"] for v in rule["verbs"]}
    assert allowed == {API_CALL_PERMISSIONS[call] for call in calls}


def test_kustomization_lists_every_manifest():
    kustomization = yaml.safe_load((K8S_DIR / "kustomization.yaml").read_text())
    listed = set(kustomization["resources"])
    assert listed == {p.name for p in K8S_DIR.glob("*.yaml")} - {"kustomization.yaml"}


@pytest.mark.parametrize(
    "breakage",
    ["replicas is a string", "unknown container field", "no selector"],
)
def test_the_validation_rejects_a_broken_deployment(manifests, breakage):
    broken = copy.deepcopy(manifests["Deployment"])
    container = broken["spec"]["template"]["spec"]["containers"][0]
    if breakage == "replicas is a string":
        broken["spec"]["replicas"] = "two"
    elif breakage == "unknown container field":
        container["readinessProbes"] = container.pop("readinessProbe")
    else:
        del broken["spec"]["selector"]
    with pytest.raises(kubernetes_validate.ValidationError):
        validate(broken)


def test_the_deployment_rolls_without_losing_capacity(manifests):
    spec = manifests["Deployment"]["spec"]
    assert spec["strategy"] == {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1}}
    assert spec["replicas"] == manifests["serving"].replicas
    assert spec["progressDeadlineSeconds"] == 300 and spec["revisionHistoryLimit"] >= 2


def test_probes_hit_readyz_and_healthz_on_the_named_port(manifests):
    pod = manifests["Deployment"]["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    port, grpc = manifests["serving"].port, manifests["serving"].grpc_port
    assert {p["name"]: p["containerPort"] for p in container["ports"]} == {"http": port, "grpc": grpc}
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    command = container["command"]
    assert command[:4] == ["keiko", "serve", "--model", manifests["model"]]
    # reachable from the kubelet and the Service (the CLI's default host is loopback), one process per pod
    assert command[command.index("--host") + 1] == "0.0.0.0"
    assert command[command.index("--port") + 1] == str(port)
    assert command[command.index("--grpc-port") + 1] == str(grpc)
    assert command[command.index("--replicas") + 1] == "1"


def test_the_container_is_what_the_rollout_patches(manifests):
    template = manifests["Deployment"]["spec"]["template"]
    (container,) = template["spec"]["containers"]
    assert container["name"] == CONTAINER
    env = {e["name"]: e for e in container["env"]}
    assert "value" in env[VERSION_ENV]  # a plain value (a valueFrom would clash with the patched value)
    assert VERSION_ANNOTATION in template["metadata"]["annotations"]
    assert env["KEIKO_REGISTRY_URL"]["valueFrom"]["configMapKeyRef"]["name"] == "keiko-config"
    assert env["KEIKO_ARTIFACT_ROOT"]["valueFrom"]["configMapKeyRef"]["name"] == "keiko-config"
    assert env["KEIKO_ADMIN_TOKEN"]["valueFrom"]["secretKeyRef"]["name"] == "keiko-admin-token"


def test_prometheus_scrapes_the_servers_metrics_and_the_prediction_log_goes_to_the_warehouse(manifests):
    template = manifests["Deployment"]["spec"]["template"]
    annotations = template["metadata"]["annotations"]
    port = manifests["serving"].port
    assert annotations["prometheus.io/scrape"] == "true"
    assert (annotations["prometheus.io/port"], annotations["prometheus.io/path"]) == (str(port), "/metrics")
    (container,) = template["spec"]["containers"]
    env = {e["name"]: e for e in container["env"]}
    assert env["KEIKO_PREDICTION_LOG_URL"]["valueFrom"]["configMapKeyRef"]["name"] == "keiko-config"
    (configmap,) = [d for d in documents() if d["kind"] == "ConfigMap"]
    assert configmap["data"]["KEIKO_PREDICTION_LOG_URL"].startswith("s3://")


def test_the_pod_runs_locked_down(manifests):
    pod = manifests["Deployment"]["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    context = container["securityContext"]
    assert context["runAsNonRoot"] and context["readOnlyRootFilesystem"]
    assert context["allowPrivilegeEscalation"] is False
    # the read-only root needs a writable /tmp, where KEIKO_HOME points
    assert [m["mountPath"] for m in container["volumeMounts"]] == ["/tmp"]
    assert {e["name"]: e.get("value") for e in container["env"]}["KEIKO_HOME"].startswith("/tmp/")
    assert container["resources"]["requests"]["memory"] == "1Gi"
    assert container["resources"]["limits"] == {"memory": "2Gi"}


def test_service_and_pdb_select_the_deployments_pods(manifests):
    deployment = manifests["Deployment"]
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    selector = deployment["spec"]["selector"]["matchLabels"]
    assert selector.items() <= pod_labels.items()
    service = manifests["Service"]["spec"]
    assert service["type"] == "ClusterIP" and service["selector"] == selector
    port, grpc = manifests["serving"].port, manifests["serving"].grpc_port
    assert service["ports"] == [
        {"name": "http", "port": port, "targetPort": "http", "protocol": "TCP"},
        {"name": "grpc", "port": grpc, "targetPort": "grpc", "protocol": "TCP", "appProtocol": "kubernetes.io/h2c"},
    ]
    pdb = manifests["PodDisruptionBudget"]["spec"]
    assert pdb["selector"]["matchLabels"] == selector and pdb["minAvailable"] == 1


def strategic_merge(live: dict, patch: dict) -> dict:
    """The API server's strategic merge, for what the rollout sends: maps by key (null deletes), `containers` and
    `env` by name (`{"name": ..., "$patch": "delete"}` removes one), other values replaced."""
    for key, value in patch.items():
        if value is None:
            live.pop(key, None)
        elif isinstance(value, dict):
            strategic_merge(live.setdefault(key, {}), value)
        elif key in ("containers", "env"):
            items = live.setdefault(key, [])
            for item in value:
                match = next((x for x in items if x["name"] == item["name"]), None)
                if item.get("$patch") == "delete":
                    if match is not None:
                        items.remove(match)
                elif match is None:
                    items.append(strategic_merge({}, item))
                else:
                    strategic_merge(match, item)
        else:
            live[key] = copy.deepcopy(value)
    return live


def test_the_deployment_as_a_canary_patches_it_stays_valid(manifests):
    """The split's patch (stable pinned, the KEIKO_CANARY_* env added) and the run's that ends it both leave a
    Deployment the API accepts, and the end leaves nothing of the canary."""
    deployment = copy.deepcopy(manifests["Deployment"])
    strategic_merge(deployment, split_patch(TrafficSplit(version=4, weight=0.05, salt="canary-v4"), stable=3))
    validate(deployment)
    template = deployment["spec"]["template"]
    (container,) = template["spec"]["containers"]
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert len(env) == len(container["env"])  # one entry per name
    assert [env[VERSION_ENV], *(env[name] for name in CANARY_ENVS)] == ["3", "4", "0.05", "canary-v4"]
    assert all(template["metadata"]["annotations"][key] for key in CANARY_ANNOTATIONS)

    strategic_merge(deployment, version_patch(4))  # promoted
    validate(deployment)
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    assert {e["name"]: e.get("value") for e in container["env"]}[VERSION_ENV] == "4"
    assert not {e["name"] for e in container["env"]} & set(CANARY_ENVS)
    assert not set(deployment["spec"]["template"]["metadata"]["annotations"]) & set(CANARY_ANNOTATIONS)
    original = manifests["Deployment"]["spec"]["template"]["spec"]["containers"][0]["env"]
    assert [e["name"] for e in container["env"]] == [e["name"] for e in original]
