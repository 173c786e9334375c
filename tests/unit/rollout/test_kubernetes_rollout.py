"""The Kubernetes rolling deploy against a fake AppsV1Api that behaves like the API server plus the
Deployment controller (no cluster here): the Deployment of deploy/k8s/ctr-server.yaml is patched, the
controller observes the new generation on a later status read and replaces pods one step per read
(maxSurge 1, maxUnavailable 0); a version whose pods never get ready ends in ProgressDeadlineExceeded
and goes back to the previous ReplicaSet's template. A canary is a patch of the same template (the stable
version pinned, the KEIKO_CANARY_* env beside it); `run` removes it with `$patch: delete` and null annotations."""

import copy
import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes.client import ApiClient, AppsV1Api
from kubernetes.client.exceptions import ApiException

from conftest import DS, run_step
from keiko.config import settings
from keiko.errors import KeikoError, LeaseLost
from keiko.process import EXIT_USER_ERROR
from keiko.registry import open_registry
from keiko.rollout import RolloutFailed
from keiko.rollout.kubernetes import (
    CANARY_ANNOTATIONS,
    CANARY_ENVS,
    CANARY_VERSION_ENV,
    CANARY_WEIGHT_ENV,
    CONTAINER,
    REVISION_ANNOTATION,
    VERSION_ANNOTATION,
    VERSION_ENV,
    KubernetesRollout,
    template_canary,
)
from keiko.serving.split import TrafficSplit

MANIFEST = Path(__file__).resolve().parents[3] / "deploy" / "k8s" / "ctr-server.yaml"
NAME, NAMESPACE = "keiko-ctr-server", "keiko"
STRATEGIC = "application/strategic-merge-patch+json"
JSON_PATCH = "application/json-patch+json"
_SERIALIZER = ApiClient()  # no connection is made: only its (de)serialization is used


def to_json(obj: Any) -> Any:
    """What the client sends, and what the API server stores: plain JSON with camelCase keys."""
    return _SERIALIZER.sanitize_for_serialization(obj)


def to_model(data: Any, kind: str) -> Any:
    """What the client returns: `kind`'s model, deserialized as from an HTTP response."""

    class Response:
        pass

    response = Response()
    response.data = json.dumps(data)
    return _SERIALIZER.deserialize(response, kind)


def container(template: dict) -> dict:
    return next(c for c in template["spec"]["containers"] if c["name"] == CONTAINER)


def env_value(template: dict) -> str | None:
    return next((e.get("value") for e in container(template)["env"] if e["name"] == VERSION_ENV), None)


def env_of(template: dict) -> dict[str, str | None]:
    return {e["name"]: e.get("value") for e in container(template)["env"]}


def variant(template: dict) -> str | None:
    """What a template's pods serve: the stable version's env value, `1+2@0.1` with a canary v2 at 10%."""
    env = env_of(template)
    if CANARY_VERSION_ENV in env:
        return f"{env.get(VERSION_ENV)}+{env[CANARY_VERSION_ENV]}@{env.get(CANARY_WEIGHT_ENV)}"
    return env.get(VERSION_ENV)


def canary_left(template: dict) -> list[str]:
    """Whatever of a canary a template still holds: KEIKO_CANARY_* env entries and canary annotations."""
    annotations = template["metadata"].get("annotations") or {}
    return [name for name in env_of(template) if name in CANARY_ENVS] + [
        key for key in annotations if key in CANARY_ANNOTATIONS
    ]


def set_version(template: dict, version: int | None) -> None:
    value = "" if version is None else str(version)
    template["metadata"].setdefault("annotations", {})[VERSION_ANNOTATION] = value
    next(e for e in container(template)["env"] if e["name"] == VERSION_ENV)["value"] = value


def without_hash(template: dict) -> dict:
    template = copy.deepcopy(template)
    template["metadata"].get("labels", {}).pop("pod-template-hash", None)
    return template


MERGE_KEYS = {"containers": "name", "env": "name"}  # patchMergeKey of the lists the rollout patches


def strategic_merge(live: dict, patch: dict) -> dict:
    """The strategic-merge-patch semantics of the API server, for what the rollout sends: maps merge key by key
    and a null deletes the key (absent: nothing happens); `containers` and `env` merge item by item on `name`,
    an item `{"name": ..., "$patch": "delete"}` removes the entry of that name (none: nothing happens); other
    lists are replaced. What the patch adds is stripped of its nulls and directives, as the API server does."""
    for key, value in patch.items():
        if value is None:
            live.pop(key, None)
        elif isinstance(value, dict):
            if not isinstance(live.get(key), dict):
                live[key] = {}
            strategic_merge(live[key], value)
        elif key in MERGE_KEYS and isinstance(value, list):
            merge_key = MERGE_KEYS[key]
            items = live[key] = list(live.get(key) or [])
            for item in value:
                directive = item.get("$patch")
                assert directive in (None, "delete"), f"unsupported directive {directive!r}"  # replace, merge: unused
                match = next((x for x in items if x[merge_key] == item[merge_key]), None)
                if directive == "delete":
                    if match is not None:
                        items.remove(match)
                elif match is None:
                    items.append(strategic_merge({}, item))
                else:
                    strategic_merge(match, item)
        else:
            live[key] = copy.deepcopy(value)
    return live


def not_found(kind: str, name: str) -> ApiException:
    exc = ApiException(status=404, reason="Not Found")
    exc.body = json.dumps({"kind": "Status", "message": f'{kind} "{name}" not found', "code": 404})
    return exc


class FakeAppsV1Api:
    """AppsV1Api for one Deployment; stores JSON like the API server and returns client models.

    `version`: what the Deployment (and its only ReplicaSet, revision 1) serves at the start, rolled
    out (None: the manifest as written, naming no version). `broken_versions`: pods of a template naming
    one of these, as the version or as the canary, never become ready (a version that fails to load:
    /readyz stays 503).
    `deadline_reads`: status reads without progress before the controller sets Progressing=False,
    reason ProgressDeadlineExceeded. `controller_running=False`: the controller never observes anything.
    """

    def __init__(
        self,
        version: int | None = 1,
        *,
        broken_versions: tuple[int, ...] = (),
        deadline_reads: int = 4,
        controller_running: bool = True,
    ) -> None:
        self.broken_versions = set(broken_versions)
        self.deadline_reads = deadline_reads
        self.controller_running = controller_running
        self.patches: list[tuple[Any, str | None]] = []  # (body as sent, content type)
        self.status_reads = 0
        self._stalled_reads = 0
        deployment = next(d for d in yaml.safe_load_all(MANIFEST.read_text()) if d["kind"] == "Deployment")
        assert (deployment["metadata"]["name"], deployment["metadata"]["namespace"]) == (NAME, NAMESPACE)
        set_version(deployment["spec"]["template"], version)
        deployment["metadata"].update(uid="uid-keiko-ctr-server", generation=1, annotations={})
        deployment["status"] = {}
        self.deployment = deployment
        self.replica_sets: list[dict] = []
        self._observe()
        first = self._current()
        first["spec"]["replicas"] = deployment["spec"]["replicas"]
        first["status"] = {"replicas": 2, "availableReplicas": 2, "readyReplicas": 2}
        self._update_status()

    # --- the AppsV1Api methods KubernetesRollout calls ---

    def read_namespaced_deployment(self, name: str, namespace: str, **_: Any) -> Any:
        self._check(name, namespace)
        return to_model(self.deployment, "V1Deployment")

    def read_namespaced_deployment_status(self, name: str, namespace: str, **_: Any) -> Any:
        self._check(name, namespace)
        self.status_reads += 1
        seen = to_model(self.deployment, "V1Deployment")  # the controller acts after this read
        if self.controller_running:
            self._reconcile()
        return seen

    def patch_namespaced_deployment(self, name: str, namespace: str, body: Any, **kwargs: Any) -> Any:
        self._check(name, namespace)
        body = to_json(body)
        self.patches.append((body, kwargs.get("_content_type")))
        patched = copy.deepcopy(self.deployment)
        if isinstance(body, list):  # JSON patch: only what `kubectl rollout undo` sends
            for op in body:
                assert op["op"] == "replace" and op["path"] == "/spec/template", op
                patched["spec"]["template"] = op["value"]
        else:
            strategic_merge(patched, body)
        if patched["spec"] != self.deployment["spec"]:
            patched["metadata"]["generation"] += 1  # the API server bumps it on any spec change
        to_model(patched, "V1Deployment")  # the API server rejects what does not deserialize
        self.deployment = patched
        return to_model(self.deployment, "V1Deployment")

    def list_namespaced_replica_set(self, namespace: str, label_selector: str = "", **_: Any) -> Any:
        wanted = dict(term.split("=", 1) for term in label_selector.split(",") if term)
        items = [
            rs
            for rs in self.replica_sets
            if rs["metadata"]["namespace"] == namespace and wanted.items() <= rs["metadata"]["labels"].items()
        ]
        return to_model({"items": items}, "V1ReplicaSetList")

    # --- what the test inspects or arranges ---

    @property
    def template(self) -> dict:
        return self.deployment["spec"]["template"]

    def pods(self) -> dict[str | None, tuple[int, int]]:
        """(available, total) pods per variant (`2`, or `1+2@0.1` with a canary), for the ReplicaSets with pods."""
        return {
            variant(rs["spec"]["template"]): (rs["status"].get("availableReplicas", 0), rs["status"]["replicas"])
            for rs in self.replica_sets
            if rs["status"].get("replicas")
        }

    def replica_set_of(self, version: int) -> dict:
        """The ReplicaSet of `version` alone (no canary beside it)."""
        return next(rs for rs in self.replica_sets if variant(rs["spec"]["template"]) == str(version))

    def add_foreign_replica_set(self, version: int, image: str) -> None:
        """A ReplicaSet with the same labels, owned by another Deployment, with the newest revision."""
        template = copy.deepcopy(self.template)
        set_version(template, version)
        container(template)["image"] = image
        rs = self._new_replica_set(template)
        rs["metadata"]["ownerReferences"][0]["uid"] = "uid-someone-else"
        rs["metadata"]["annotations"][REVISION_ANNOTATION] = "99"

    # --- the API server and the Deployment controller ---

    def _check(self, name: str, namespace: str) -> None:
        if (name, namespace) != (NAME, NAMESPACE):
            raise not_found("deployments.apps", name)

    def _versions(self, template: dict) -> set[int]:
        """The versions a template's pods load: the one KEIKO_MODEL_VERSION names and the canary's."""
        env = env_of(template)
        return {int(env[name]) for name in (VERSION_ENV, CANARY_VERSION_ENV) if env.get(name)}

    def _owned(self) -> list[dict]:
        uid = self.deployment["metadata"]["uid"]
        return [rs for rs in self.replica_sets if rs["metadata"]["ownerReferences"][0]["uid"] == uid]

    def _current(self) -> dict:
        template = without_hash(self.template)
        return next(rs for rs in self._owned() if without_hash(rs["spec"]["template"]) == template)

    def _new_replica_set(self, template: dict) -> dict:
        pod_hash = f"h{len(self.replica_sets) + 1}"
        template = copy.deepcopy(template)
        template["metadata"]["labels"]["pod-template-hash"] = pod_hash
        rs = {
            "apiVersion": "apps/v1",
            "kind": "ReplicaSet",
            "metadata": {
                "name": f"{NAME}-{pod_hash}",
                "namespace": NAMESPACE,
                "labels": template["metadata"]["labels"],
                "annotations": {REVISION_ANNOTATION: "0"},
                "ownerReferences": [
                    {
                        "apiVersion": "apps/v1",
                        "kind": "Deployment",
                        "name": NAME,
                        "uid": self.deployment["metadata"]["uid"],
                        "controller": True,
                    }
                ],
            },
            "spec": {"replicas": 0, "selector": self.deployment["spec"]["selector"], "template": template},
            "status": {"replicas": 0},
        }
        self.replica_sets.append(rs)
        return rs

    def _observe(self) -> None:
        """The controller sees a new generation: finds or creates the ReplicaSet of the template, which
        becomes the newest revision, and restarts the progress clock."""
        template = without_hash(self.template)
        rs = next((rs for rs in self._owned() if without_hash(rs["spec"]["template"]) == template), None)
        reason = "FoundNewReplicaSet"
        if rs is None:
            rs, reason = self._new_replica_set(template), "NewReplicaSetCreated"
        newest = max((revision(r) for r in self._owned() if r is not rs), default=0)
        if revision(rs) <= newest:
            rs["metadata"]["annotations"][REVISION_ANNOTATION] = str(newest + 1)
        self.deployment["metadata"]["annotations"][REVISION_ANNOTATION] = str(revision(rs))
        self.deployment["status"]["observedGeneration"] = self.deployment["metadata"]["generation"]
        self.deployment["status"]["conditions"] = [{"type": "Progressing", "status": "True", "reason": reason}]
        self._stalled_reads = 0

    def _step(self) -> bool:
        """One change of pods toward the template; False if none is possible."""
        desired = self.deployment["spec"]["replicas"]
        new = self._current()
        olds = [rs for rs in self._owned() if rs is not new and rs["status"]["replicas"]]
        available = sum(rs["status"].get("availableReplicas", 0) for rs in self._owned())
        total = sum(rs["status"]["replicas"] for rs in self._owned())
        status = new["status"]
        ready = not self._versions(new["spec"]["template"]) & self.broken_versions
        if ready and available_of(new) < status["replicas"]:  # a new pod passes its readiness probe
            status["availableReplicas"] = status["readyReplicas"] = available_of(new) + 1
            return True
        for old in olds:  # pods that never got ready go first: they count for nothing
            if old["status"].get("availableReplicas", 0) < old["status"]["replicas"]:
                old["status"]["replicas"] -= 1
                old["spec"]["replicas"] -= 1
                return True
        for old in olds:  # maxUnavailable 0: an available old pod goes only above `desired` available
            if available - 1 >= desired:
                old["status"]["replicas"] -= 1
                old["spec"]["replicas"] -= 1
                old["status"]["availableReplicas"] = old["status"]["readyReplicas"] = available_of(old) - 1
                return True
        if status["replicas"] < desired and total < desired + 1:  # maxSurge 1
            status["replicas"] += 1
            new["spec"]["replicas"] += 1
            return True
        return False

    def _reconcile(self) -> None:
        if self.deployment["status"].get("observedGeneration", 0) < self.deployment["metadata"]["generation"]:
            self._observe()
        elif self._step():
            self._stalled_reads = 0
        elif not self._complete():
            self._stalled_reads += 1
            if self._stalled_reads >= self.deadline_reads:
                self.deployment["status"]["conditions"] = [
                    {
                        "type": "Progressing",
                        "status": "False",
                        "reason": "ProgressDeadlineExceeded",
                        "message": f'ReplicaSet "{self._current()["metadata"]["name"]}" has timed out progressing.',
                    }
                ]
        self._update_status()

    def _complete(self) -> bool:
        desired, new = self.deployment["spec"]["replicas"], self._current()
        others = sum(rs["status"]["replicas"] for rs in self._owned() if rs is not new)
        return new["status"]["replicas"] == available_of(new) == desired and others == 0

    def _update_status(self) -> None:
        owned, new = self._owned(), self._current()
        counts = {
            "replicas": sum(rs["status"]["replicas"] for rs in owned),
            "updatedReplicas": new["status"]["replicas"],
            "availableReplicas": sum(available_of(rs) for rs in owned),
            "readyReplicas": sum(available_of(rs) for rs in owned),
        }
        status = self.deployment["status"]
        for key, value in counts.items():  # the API omits zero counts: the client model reads None
            if value:
                status[key] = value
            else:
                status.pop(key, None)


def revision(rs: dict) -> int:
    return int(rs["metadata"]["annotations"][REVISION_ANNOTATION])


def available_of(rs: dict) -> int:
    return rs["status"].get("availableReplicas", 0)


def rollout_for(api: FakeAppsV1Api, lines: list[str] | None = None, **kwargs: Any) -> KubernetesRollout:
    rollout = KubernetesRollout(
        model="ctr",
        deployment=kwargs.pop("deployment", NAME),
        namespace=NAMESPACE,
        poll_interval=0,
        log=(lines if lines is not None else []).append,
        **kwargs,
    )
    rollout.apps_api = api
    return rollout


def test_a_rollout_moves_every_pod_to_the_new_version():
    api, lines = FakeAppsV1Api(version=1), []
    events = rollout_for(api, lines).run(2, previous=1)
    assert [(e.replica, e.event, e.version) for e in events] == [
        ("keiko/keiko-ctr-server", "patched", 2),
        ("keiko/keiko-ctr-server", "ready", 2),
    ]
    assert events[0].detail == "generation 2"
    assert api.template["metadata"]["annotations"][VERSION_ANNOTATION] == "2"
    assert env_value(api.template) == "2"
    # the merge touched only the version: the other env entries are still there
    names = [e["name"] for e in container(api.template)["env"]]
    assert names == [
        VERSION_ENV,
        "KEIKO_REGISTRY_URL",
        "KEIKO_ARTIFACT_ROOT",
        "KEIKO_PREDICTION_LOG_URL",
        "KEIKO_ADMIN_TOKEN",
        "KEIKO_HOME",
    ]
    assert api.pods() == {"2": (2, 2)}  # every v2 pod available, no v1 pod left


def test_the_watch_waits_for_the_new_generation_and_the_old_pods():
    """Right after the patch the status still describes the old pods (2/2 updated, 2/2 available):
    only observedGeneration tells them apart. The progress lines show the one-by-one replacement."""
    api, lines = FakeAppsV1Api(version=1), []
    rollout_for(api, lines).run(2, previous=1)
    progress = [line for line in lines if line.startswith("keiko-ctr-server: ")]
    assert progress == [
        "keiko-ctr-server: waiting for the controller to observe generation 2",
        "keiko-ctr-server: 0/2 updated, 2/2 available, 2 old pending termination",
        "keiko-ctr-server: 1/2 updated, 2/2 available, 2 old pending termination",
        "keiko-ctr-server: 1/2 updated, 3/2 available, 2 old pending termination",
        "keiko-ctr-server: 1/2 updated, 2/2 available, 1 old pending termination",
        "keiko-ctr-server: 2/2 updated, 2/2 available, 1 old pending termination",
        "keiko-ctr-server: 2/2 updated, 3/2 available, 1 old pending termination",
        "keiko-ctr-server: 2/2 updated, 2/2 available",
    ]
    assert lines[-1] == "keiko/keiko-ctr-server: ready v2 (2/2 updated, 2/2 available)"


def test_the_patch_sets_the_annotation_and_the_env_by_strategic_merge():
    """...and removes any canary's (a no-op when there is none: deleting what is not there changes nothing)."""
    api = FakeAppsV1Api(version=1)
    rollout_for(api).run(2, previous=1)
    assert api.patches == [
        (
            {
                "spec": {
                    "template": {
                        "metadata": {
                            "annotations": {
                                "keiko.io/model-version": "2",
                                "keiko.io/canary-version": None,
                                "keiko.io/canary-weight": None,
                            }
                        },
                        "spec": {
                            "containers": [
                                {
                                    "name": "model-server",
                                    "env": [
                                        {"name": "KEIKO_MODEL_VERSION", "value": "2"},
                                        {"name": "KEIKO_CANARY_VERSION", "$patch": "delete"},
                                        {"name": "KEIKO_CANARY_WEIGHT", "$patch": "delete"},
                                        {"name": "KEIKO_CANARY_SALT", "$patch": "delete"},
                                    ],
                                }
                            ]
                        },
                    }
                }
            },
            STRATEGIC,
        )
    ]
    assert canary_left(api.template) == []


def test_a_deployment_already_on_the_version_is_left_alone():
    api = FakeAppsV1Api(version=2)
    events = rollout_for(api).run(2, previous=1)
    assert [(e.event, e.version) for e in events] == [("unchanged", 2)]
    assert api.patches == [] and api.status_reads == 0


def test_a_stuck_rollout_goes_back_to_the_previous_replica_sets_template():
    api = FakeAppsV1Api(version=1, broken_versions=(2,))
    before = without_hash(api.replica_set_of(1)["spec"]["template"])
    rollout = rollout_for(api)
    with pytest.raises(RolloutFailed) as failure:
        rollout.run(2, previous=1)
    message = str(failure.value)
    assert message.startswith("rollout of v2 failed on deployment keiko/keiko-ctr-server: ProgressDeadlineExceeded")
    assert "has timed out progressing" in message and message.endswith("; rolled back to v1")
    assert failure.value.rolled_back is True
    assert [(e.event, e.version) for e in failure.value.events] == [("patched", 2), ("failed", 2), ("rolled back", 1)]
    # the template is v1's again, exactly (annotation and env included), and so are the pods
    assert api.template == before
    assert api.template["metadata"]["annotations"][VERSION_ANNOTATION] == "1" and env_value(api.template) == "1"
    assert api.pods() == {"1": (2, 2)}
    # like `kubectl rollout undo`: v1's ReplicaSet is reused as the newest revision, no third one
    assert len(api.replica_sets) == 2
    assert api.replica_set_of(1)["metadata"]["annotations"][REVISION_ANNOTATION] == "3"
    undo, content_type = api.patches[-1]
    assert content_type == JSON_PATCH and "pod-template-hash" not in undo[0]["value"]["metadata"]["labels"]


def test_a_rollout_nobody_acts_on_times_out():
    api = FakeAppsV1Api(version=1, controller_running=False)
    with pytest.raises(RolloutFailed) as failure:
        rollout_for(api, timeout=0.01).run(2, previous=1)
    message = str(failure.value)
    assert "deployment keiko/keiko-ctr-server: timed out after 0.01s" in message
    assert "waiting for the controller to observe generation 2" in message
    # the undo was sent, but its rollout cannot complete either: not claimed as rolled back
    assert message.endswith("NOT rolled back, see the change's record") and failure.value.rolled_back is False
    assert [e.event for e in failure.value.events] == ["patched", "failed", "rollback failed"]
    assert env_value(api.template) == "1"


def test_roll_back_without_a_previous_version_does_nothing():
    api = FakeAppsV1Api(version=1)
    rollout = rollout_for(api)
    template = copy.deepcopy(api.template)
    assert rollout.roll_back(None) is False
    assert api.patches == [] and api.template == template
    assert [(e.event, e.detail) for e in rollout.events] == [
        ("rollback failed", "no previous version: nothing to roll back to")
    ]


def test_roll_back_to_a_version_no_replica_set_serves_does_nothing():
    api = FakeAppsV1Api(version=1)
    rollout = rollout_for(api)
    assert rollout.roll_back(7) is False
    assert api.patches == []
    assert rollout.events[-1].detail == "no ReplicaSet of the Deployment serves v7"


def test_roll_back_ignores_replica_sets_of_other_deployments():
    api = FakeAppsV1Api(version=1)
    rollout = rollout_for(api)
    rollout.run(2, previous=1)
    api.add_foreign_replica_set(1, image="someone-else:1")  # same labels, newer revision, v1 too
    assert rollout.roll_back(1) is True
    assert env_value(api.template) == "1" and container(api.template)["image"] == "keiko:latest"
    assert api.pods() == {"1": (2, 2)}


def test_roll_back_falls_back_to_the_template_that_served_production():
    """Pods started from the manifest as written name no version: they load the `production` alias,
    which is still `previous` while the deploy fails. No ReplicaSet names v5: that one is the way back."""
    api = FakeAppsV1Api(version=None, broken_versions=(6,))
    with pytest.raises(RolloutFailed) as failure:
        rollout_for(api).run(6, previous=5)
    assert str(failure.value).endswith("rolled back to v5") and failure.value.rolled_back is True
    assert env_value(api.template) == "" and api.pods() == {"": (2, 2)}


def test_an_api_error_is_a_one_line_failure_and_changes_nothing():
    api = FakeAppsV1Api(version=1)
    with pytest.raises(RolloutFailed) as failure:
        rollout_for(api, deployment="keiko-ctr-srv").run(2, previous=1)
    assert str(failure.value) == (
        "rollout of v2 failed on deployment keiko/keiko-ctr-srv: "
        'Kubernetes API 404: deployments.apps "keiko-ctr-srv" not found; the Deployment was not changed'
    )
    assert api.patches == [] and env_value(api.template) == "1"


CANARY = TrafficSplit(version=2, weight=0.1, salt="ctr-v2-canary")
OTHER_ENV = ["KEIKO_REGISTRY_URL", "KEIKO_ARTIFACT_ROOT", "KEIKO_PREDICTION_LOG_URL", "KEIKO_ADMIN_TOKEN", "KEIKO_HOME"]


def test_the_fake_merges_like_the_api_server():
    """Nulls delete keys, `$patch: delete` removes an entry by name, deleting what is absent is a no-op, and
    what the patch adds keeps none of its nulls or directives."""
    live = {"a": {"keep": "1", "drop": "2"}, "env": [{"name": "X", "value": "1"}, {"name": "Y", "value": "2"}]}
    patch = {
        "a": {"drop": None, "absent": None},
        "new": {"k": "v", "gone": None},
        "env": [{"name": "Y", "$patch": "delete"}, {"name": "Z", "$patch": "delete"}, {"name": "W", "value": "3"}],
    }
    assert strategic_merge(live, patch) == {
        "a": {"keep": "1"},
        "new": {"k": "v"},
        "env": [{"name": "X", "value": "1"}, {"name": "W", "value": "3"}],
    }


def test_a_split_pins_stable_adds_the_canary_env_and_waits_for_the_pods():
    api, lines = FakeAppsV1Api(version=1), []
    events = rollout_for(api, lines).split(CANARY, stable=1)
    assert [(e.event, e.version, e.detail) for e in events] == [
        ("canary", 2, "10% of users, stable v1, generation 2"),
        ("ready", 2, "2/2 updated, 2/2 available"),
    ]
    assert api.patches == [
        (
            {
                "spec": {
                    "template": {
                        "metadata": {
                            "annotations": {
                                "keiko.io/model-version": "1",
                                "keiko.io/canary-version": "2",
                                "keiko.io/canary-weight": "0.1",
                            }
                        },
                        "spec": {
                            "containers": [
                                {
                                    "name": "model-server",
                                    "env": [
                                        {"name": "KEIKO_MODEL_VERSION", "value": "1"},
                                        {"name": "KEIKO_CANARY_VERSION", "value": "2"},
                                        {"name": "KEIKO_CANARY_WEIGHT", "value": "0.1"},
                                        {"name": "KEIKO_CANARY_SALT", "value": "ctr-v2-canary"},
                                    ],
                                }
                            ]
                        },
                    }
                }
            },
            STRATEGIC,
        )
    ]
    # merged by name: the other env entries stay, the canary's come after them
    assert list(env_of(api.template)) == [VERSION_ENV, *OTHER_ENV, *CANARY_ENVS]
    assert template_canary(to_model(api.template, "V1PodTemplateSpec")) == CANARY
    # every pod replaced (one new pod at a time, none lost) by one that holds both versions
    assert api.pods() == {"1+2@0.1": (2, 2)}
    assert "keiko-ctr-server: 1/2 updated, 2/2 available, 2 old pending termination" in lines


def test_a_split_pins_the_stable_version_when_the_template_named_none():
    """Pods of the manifest as written load `production`: the split's pods must keep that version, named."""
    api = FakeAppsV1Api(version=None)
    rollout_for(api).split(TrafficSplit(6, 0.25, "s"), stable=5)
    assert env_value(api.template) == "5" and api.pods() == {"5+6@0.25": (2, 2)}


def test_a_split_already_in_place_is_unchanged():
    api = FakeAppsV1Api(version=1)
    rollout_for(api).split(CANARY, stable=1)
    patches, reads = len(api.patches), api.status_reads
    events = rollout_for(api).split(CANARY, stable=1)
    assert [(e.event, e.version) for e in events] == [("unchanged", 2)]
    assert (len(api.patches), api.status_reads) == (patches, reads)
    # another weight (or salt) is another split: a patch, and a pod rollout
    events = rollout_for(api).split(TrafficSplit(2, 0.5, CANARY.salt), stable=1)
    assert [e.event for e in events] == ["canary", "ready"] and api.pods() == {"1+2@0.5": (2, 2)}


def test_run_of_the_stable_version_ends_the_canary():
    """The template names the version but also a canary: no "unchanged" short-cut, every canary entry removed,
    and the template is the one before the split again (its ReplicaSet reused, as the controller does)."""
    api = FakeAppsV1Api(version=1)
    before = without_hash(api.replica_set_of(1)["spec"]["template"])
    rollout_for(api).split(CANARY, stable=1)
    events = rollout_for(api).run(1, previous=1)
    assert [(e.event, e.version) for e in events] == [("patched", 1), ("ready", 1)]
    assert canary_left(api.template) == [] and env_value(api.template) == "1"
    assert api.template == before
    assert api.pods() == {"1": (2, 2)} and len(api.replica_sets) == 2


def test_run_of_the_canary_version_promotes_it():
    api = FakeAppsV1Api(version=1)
    rollout_for(api).split(CANARY, stable=1)
    events = rollout_for(api).run(2, previous=1)
    assert [(e.event, e.version) for e in events] == [("patched", 2), ("ready", 2)]
    assert canary_left(api.template) == []
    assert env_value(api.template) == "2" and api.template["metadata"]["annotations"][VERSION_ANNOTATION] == "2"
    assert list(env_of(api.template)) == [VERSION_ENV, *OTHER_ENV]
    assert api.pods() == {"2": (2, 2)}


def test_a_split_whose_pods_never_get_ready_goes_back_to_the_previous_template():
    api = FakeAppsV1Api(version=1, broken_versions=(2,))  # the canary does not load: its pods are never ready
    before = without_hash(api.replica_set_of(1)["spec"]["template"])
    with pytest.raises(RolloutFailed) as failure:
        rollout_for(api).split(CANARY, stable=1)
    message = str(failure.value)
    assert message.startswith("canary of v2 failed on deployment keiko/keiko-ctr-server: ProgressDeadlineExceeded")
    assert message.endswith("; rolled back to v1") and failure.value.rolled_back is True
    assert [(e.event, e.version) for e in failure.value.events] == [("canary", 2), ("failed", 2), ("rolled back", 1)]
    assert api.template == before and canary_left(api.template) == []
    assert api.pods() == {"1": (2, 2)}
    assert api.patches[-1][1] == JSON_PATCH


def test_a_failed_canary_step_puts_every_user_back_on_stable_not_on_the_step_before():
    """10% rolled out, then 50% fails: the way back is v1 alone (Rollout.split's contract), not the 10% template,
    although that one is the newest ReplicaSet naming v1."""
    api = FakeAppsV1Api(version=1)
    before = without_hash(api.replica_set_of(1)["spec"]["template"])
    rollout_for(api).split(CANARY, stable=1)
    api.broken_versions.add(2)  # e.g. the canary's artifact no longer loads: new pods never get ready
    with pytest.raises(RolloutFailed) as failure:
        rollout_for(api).split(TrafficSplit(2, 0.5, CANARY.salt), stable=1)
    assert failure.value.rolled_back is True
    assert api.template == before and api.pods() == {"1": (2, 2)}


def test_canary_is_what_the_template_names():
    api = FakeAppsV1Api(version=1)
    rollout = rollout_for(api)
    assert rollout.canary() is None
    rollout.split(CANARY, stable=1)
    assert rollout.canary() == 2
    rollout.run(1, previous=1)
    assert rollout.canary() is None
    container(api.template)["env"].append({"name": CANARY_VERSION_ENV, "value": "2"})  # no weight, no salt
    with pytest.raises(KeikoError, match="names a canary no server can load"):
        rollout.canary()
    with pytest.raises(KeikoError, match="Kubernetes API 404: "):
        rollout_for(api, deployment="keiko-ctr-srv").canary()


def test_template_canary_reads_only_a_canary_a_server_would_load():
    def template_with(**env: str) -> Any:
        template = copy.deepcopy(FakeAppsV1Api(version=1).template)
        container(template)["env"] += [{"name": name, "value": value} for name, value in env.items()]
        return to_model(template, "V1PodTemplateSpec")

    assert template_canary(template_with()) is None
    assert template_canary(template_with(KEIKO_CANARY_VERSION="")) is None
    assert template_canary(template_with(KEIKO_CANARY_VERSION="2", KEIKO_CANARY_WEIGHT="0.1")) is None  # no salt
    assert (
        template_canary(template_with(KEIKO_CANARY_VERSION="2", KEIKO_CANARY_WEIGHT="2", KEIKO_CANARY_SALT="s")) is None
    )
    split = template_with(KEIKO_CANARY_VERSION="2", KEIKO_CANARY_WEIGHT="0.1", KEIKO_CANARY_SALT="ctr-v2-canary")
    assert template_canary(split) == CANARY


def test_a_split_after_a_lost_lease_touches_nothing():
    api = FakeAppsV1Api(version=1)
    template = copy.deepcopy(api.template)

    def lost() -> None:
        raise LeaseLost("ctr: the production lease was taken by someone else")

    rollout = rollout_for(api, guard=lost)
    with pytest.raises(LeaseLost):
        rollout.split(CANARY, stable=1)
    assert api.patches == [] and api.template == template and rollout.events == []


def test_the_api_client_comes_from_the_airflow_connection(monkeypatch):
    kubeconfig = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "c", "cluster": {"server": "https://k8s.example:6443"}}],
        "users": [{"name": "u", "user": {"token": "keiko-test-token"}}],
        "contexts": [{"name": "ctx", "context": {"cluster": "c", "user": "u"}}],
        "current-context": "ctx",
    }
    monkeypatch.setenv(
        "AIRFLOW_CONN_KEIKO_K8S", json.dumps({"conn_type": "kubernetes", "extra": {"kube_config": kubeconfig}})
    )
    rollout = KubernetesRollout(model="ctr", deployment=NAME, namespace=NAMESPACE, conn_id="keiko_k8s")
    assert "apps_api" not in vars(rollout)  # nothing is built (or imported) until first used
    api = rollout.apps_api
    assert isinstance(api, AppsV1Api)
    assert api.api_client.configuration.host == "https://k8s.example:6443"
    assert rollout.apps_api is api


def deploy_stage_record(home: Path) -> dict:
    return json.loads((home / "artifacts" / "ctr" / DS / "deploy.json").read_text())


def test_the_deploy_stage_rolls_the_deployment_when_the_backend_is_kubernetes(run_home, monkeypatch):

    api = FakeAppsV1Api(version=None)  # as first applied: the pods serve the production alias (none yet)
    monkeypatch.setenv("KEIKO_DEPLOY_BACKEND", "kubernetes")
    monkeypatch.setattr(KubernetesRollout, "apps_api", api)
    monkeypatch.setattr("keiko.rollout.kubernetes.time.sleep", lambda _seconds: None)
    assert run_step("deploy") == 0
    assert env_value(api.template) == "1" and api.pods() == {"1": (2, 2)}
    assert open_registry(settings().registry_url).alias("ctr") == 1
    record = deploy_stage_record(run_home)
    assert record["backend"] == "kubernetes" and record["success"]
    assert record["replicas"] == ["http://keiko-ctr-server.keiko.svc:8601"]  # what gate_serving will probe


def test_an_unknown_deploy_backend_is_a_user_error_that_changes_nothing(run_home, monkeypatch, capsys):

    monkeypatch.setenv("KEIKO_DEPLOY_BACKEND", "nomad")
    assert run_step("deploy") == EXIT_USER_ERROR
    assert "KEIKO_DEPLOY_BACKEND='nomad': expected one of local, kubernetes" in capsys.readouterr().err
    assert open_registry(settings().registry_url).alias("ctr") is None
