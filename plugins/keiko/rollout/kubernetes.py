"""Kubernetes backend: the model server is a Deployment; a rollout is a change of its pod template.

The deploy stage patches the template (annotation `keiko.io/model-version` and env
`KEIKO_MODEL_VERSION`, which the server loads at start) and the Deployment controller replaces the
pods one at a time (deploy/k8s/ctr-server.yaml: maxSurge 1, maxUnavailable 0, readiness on /readyz),
so serving capacity never drops below spec.replicas. The watch is `kubectl rollout status`'s: done
once the controller has observed the new generation and every pod is updated and available, with no
old pod left; a `ProgressDeadlineExceeded` condition or our own timeout is a failure, after which the
template goes back to the previous ReplicaSet's, as `kubectl rollout undo` does.

A canary (`split`) is the same kind of change: the patch pins KEIKO_MODEL_VERSION to the stable version and adds
KEIKO_CANARY_VERSION, _WEIGHT and _SALT (with annotations keiko.io/canary-version and keiko.io/canary-weight), so
every new pod loads both versions before it is ready (`ModelServer.load_initial`) and splits the
users itself. `run` ends any canary in the same patch that names its version (`$patch: delete` of the canary env,
null annotations): promoting is run(canary), reverting run(stable). A weight change is one more pod rollout.
"""

from __future__ import annotations

import copy
import json
import time
from collections.abc import Callable
from functools import cached_property
from typing import TYPE_CHECKING, Any

from keiko.errors import KeikoError
from keiko.rollout import Rollout, RolloutEvent, RolloutFailed
from keiko.serving.split import TrafficSplit

if TYPE_CHECKING:
    from kubernetes.client import AppsV1Api, V1Deployment, V1PodTemplateSpec, V1ReplicaSet

CONTAINER = "model-server"
VERSION_ENV = "KEIKO_MODEL_VERSION"
VERSION_ANNOTATION = "keiko.io/model-version"
REVISION_ANNOTATION = "deployment.kubernetes.io/revision"
# A canary's env (read by keiko.serving.model_server at start) and annotations: set by `split`, removed by `run`.
CANARY_VERSION_ENV = "KEIKO_CANARY_VERSION"
CANARY_WEIGHT_ENV = "KEIKO_CANARY_WEIGHT"
CANARY_SALT_ENV = "KEIKO_CANARY_SALT"
CANARY_ENVS = (CANARY_VERSION_ENV, CANARY_WEIGHT_ENV, CANARY_SALT_ENV)
CANARY_VERSION_ANNOTATION = "keiko.io/canary-version"
CANARY_WEIGHT_ANNOTATION = "keiko.io/canary-weight"
CANARY_ANNOTATIONS = (CANARY_VERSION_ANNOTATION, CANARY_WEIGHT_ANNOTATION)


def _server_env(template: V1PodTemplateSpec) -> dict[str, str | None]:
    """The model-server container's env entries by name (their plain values; None for a valueFrom)."""
    for container in template.spec.containers:
        if container.name == CONTAINER:
            return {env.name: env.value for env in container.env or []}
    return {}


def template_version(template: V1PodTemplateSpec) -> int | None:
    """The version a pod template names in the model-server's KEIKO_MODEL_VERSION; None if it names none
    (unset or empty: the server loads the registry's `production` alias)."""
    value = _server_env(template).get(VERSION_ENV) or ""
    return int(value) if value.isdigit() else None


def template_canary(template: V1PodTemplateSpec) -> TrafficSplit | None:
    """The canary a pod template names in the model-server's KEIKO_CANARY_VERSION, _WEIGHT and _SALT; None if it
    names none, or one no server would load (its pods never get ready: a bad weight or no salt)."""
    env = _server_env(template)
    version = (env.get(CANARY_VERSION_ENV) or "").strip()
    if not version.isdigit():
        return None
    try:
        return TrafficSplit(int(version), float(env.get(CANARY_WEIGHT_ENV) or "0"), env.get(CANARY_SALT_ENV) or "")
    except ValueError:
        return None


def names_canary(template: V1PodTemplateSpec) -> bool:
    """Whether anything of a canary is in the template: a KEIKO_CANARY_* env entry (even empty) or annotation."""
    annotations = (template.metadata and template.metadata.annotations) or {}
    env = _server_env(template)
    return any(name in env for name in CANARY_ENVS) or any(key in annotations for key in CANARY_ANNOTATIONS)


def _template_patch(annotations: dict[str, str | None], env: list[dict[str, str]]) -> dict[str, Any]:
    """A strategic merge patch of the pod template: annotations merge by key (null deletes one), containers and
    env by name (`$patch: delete` removes an entry; deleting one that is not there changes nothing)."""
    return {
        "spec": {
            "template": {
                "metadata": {"annotations": annotations},
                "spec": {"containers": [{"name": CONTAINER, "env": env}]},
            }
        }
    }


def version_patch(version: int) -> dict[str, Any]:
    """What `run` sends: the pods load `version` alone (any canary's env and annotations removed)."""
    return _template_patch(
        {VERSION_ANNOTATION: str(version), **dict.fromkeys(CANARY_ANNOTATIONS)},
        [{"name": VERSION_ENV, "value": str(version)}, *({"name": name, "$patch": "delete"} for name in CANARY_ENVS)],
    )


def split_patch(split: TrafficSplit, stable: int) -> dict[str, Any]:
    """What `split` sends: the pods load `stable` and the canary, and split the users by `split`."""
    weight = repr(float(split.weight))
    return _template_patch(
        {
            VERSION_ANNOTATION: str(stable),
            CANARY_VERSION_ANNOTATION: str(split.version),
            CANARY_WEIGHT_ANNOTATION: weight,
        },
        [
            {"name": VERSION_ENV, "value": str(stable)},
            {"name": CANARY_VERSION_ENV, "value": str(split.version)},
            {"name": CANARY_WEIGHT_ENV, "value": weight},
            {"name": CANARY_SALT_ENV, "value": split.salt},
        ],
    )


def rollout_status(deployment: V1Deployment, generation: int) -> tuple[str, str]:
    """("waiting" | "complete" | "failed", one line) for `generation` of `deployment`, as `kubectl rollout
    status` decides it: nothing in the status counts until the controller has observed that generation."""
    name, status = deployment.metadata.name, deployment.status
    if (status.observed_generation or 0) < generation:
        return "waiting", f"{name}: waiting for the controller to observe generation {generation}"
    for condition in status.conditions or []:
        if condition.type == "Progressing" and condition.reason == "ProgressDeadlineExceeded":
            return "failed", f"ProgressDeadlineExceeded: {(condition.message or 'no progress').rstrip('.')}"
    want = deployment.spec.replicas if deployment.spec.replicas is not None else 1
    updated, available, total = status.updated_replicas or 0, status.available_replicas or 0, status.replicas or 0
    line = f"{name}: {updated}/{want} updated, {available}/{want} available"
    if total > updated:
        line += f", {total - updated} old pending termination"
    done = updated == want and available == want and total == want
    return ("complete" if done else "waiting"), line


class _NotComplete(Exception):
    """The watched rollout failed or timed out (internal: becomes an event and a RolloutFailed)."""


class KubernetesRollout(Rollout):
    def __init__(
        self,
        *,
        model: str,
        deployment: str,
        namespace: str,
        conn_id: str = "kubernetes_default",
        timeout: float = 600.0,
        poll_interval: float = 2.0,
        log: Callable[[str], None] = print,
        guard: Callable[[], None] = lambda: None,
    ) -> None:
        if not deployment or not namespace:
            raise KeikoError(f"{model}: no Kubernetes deployment/namespace configured")
        super().__init__(log=log, guard=guard)
        self.model = model
        self.deployment = deployment
        self.namespace = namespace
        self.conn_id = conn_id
        self.timeout = timeout
        self.poll_interval = poll_interval
        self.target = f"{namespace}/{deployment}"

    @cached_property
    def apps_api(self) -> AppsV1Api:
        """The hook's AppsV1Api (its ApiClient comes from the Airflow connection `conn_id`: in-cluster
        config, a kubeconfig path or an inline kubeconfig)."""
        from airflow.providers.cncf.kubernetes.hooks.kubernetes import KubernetesHook

        return KubernetesHook(conn_id=self.conn_id).apps_v1_client

    def _read(self) -> V1Deployment:
        return self.apps_api.read_namespaced_deployment(self.deployment, self.namespace)

    def _watch(self, generation: int) -> str:
        """Poll the Deployment's status until `generation` is rolled out; its last progress line."""
        deadline = time.monotonic() + self.timeout
        last = ""
        while True:
            deployment = self.apps_api.read_namespaced_deployment_status(self.deployment, self.namespace)
            state, line = rollout_status(deployment, generation)
            if state == "failed":
                raise _NotComplete(line)
            if line != last:
                self.log(line)
                last = line
            if state == "complete":
                return line
            if time.monotonic() >= deadline:
                raise _NotComplete(f"timed out after {self.timeout:g}s: {line.split(': ', 1)[1]}")
            time.sleep(self.poll_interval)

    def _patch(self, body: dict[str, Any]) -> V1Deployment:
        self.guard()  # a lost lease propagates: nothing more is touched
        return self.apps_api.patch_namespaced_deployment(
            self.deployment, self.namespace, body, _content_type="application/strategic-merge-patch+json"
        )

    def _failed(self, exc: Exception, what: str, version: int, patched: bool, back_to: int | None) -> RolloutFailed:
        """Record the failure, undo the patch if one was sent (back to `back_to` alone), say how it ended."""
        reason = _reason(exc)
        self._record(self.target, "failed", version, reason)
        if not patched:
            rolled_back, outcome = back_to is not None, "the Deployment was not changed"
        elif self.roll_back(back_to):
            rolled_back, outcome = True, f"rolled back to v{back_to}"
        else:
            rolled_back, outcome = False, "NOT rolled back, see the change's record"
        return RolloutFailed(
            f"{what} failed on deployment {self.target}: {reason}; {outcome}",
            events=self.events,
            rolled_back=rolled_back,
        )

    def run(self, version: int, previous: int | None) -> list[RolloutEvent]:
        """Move the Deployment's pods to `version` alone (a canary beside it ended, a canary of it promoted); on
        any failure put the template back to `previous`'s."""
        from kubernetes.client.exceptions import ApiException
        from urllib3.exceptions import HTTPError

        patched = False
        try:
            deployment = self._read()
            generation = deployment.metadata.generation or 0
            template = deployment.spec.template
            on_version = template_version(template) == version and not names_canary(template)
            if on_version and rollout_status(deployment, generation)[0] == "complete":
                self._record(self.target, "unchanged", version, "already rolled out")
                return self.events
            if not any(c.name == CONTAINER for c in template.spec.containers):
                raise _NotComplete(f"its pod template has no container named {CONTAINER}")
            deployment = self._patch(version_patch(version))
            patched = True
            generation = deployment.metadata.generation
            self._record(self.target, "patched", version, f"generation {generation}")
            line = self._watch(generation)
            self._record(self.target, "ready", version, line.split(": ", 1)[1])
            return self.events
        except (_NotComplete, ApiException, HTTPError) as exc:
            raise self._failed(exc, f"rollout of v{version}", version, patched, previous) from None

    def canary(self) -> int | None:
        """The canary the Deployment's pod template names (what its pods serve, or converge to); None if none.
        KeikoError when the API cannot be read, or the template names a canary no pod would load."""
        from kubernetes.client.exceptions import ApiException
        from urllib3.exceptions import HTTPError

        try:
            template = self._read().spec.template
        except (ApiException, HTTPError) as exc:
            raise KeikoError(f"reading deployment {self.target} failed: {_reason(exc)}") from None
        split = template_canary(template)
        if split is None and names_canary(template):
            raise KeikoError(f"deployment {self.target}'s pod template names a canary no server can load")
        return split.version if split else None

    def split(self, split: TrafficSplit, stable: int) -> list[RolloutEvent]:
        """Have the Deployment's pods serve `split.version` beside `stable` to `split.weight` of the users (each new
        pod is ready once it loaded both); on any failure put the template back to `stable`'s alone."""
        from kubernetes.client.exceptions import ApiException
        from urllib3.exceptions import HTTPError

        patched = False
        try:
            deployment = self._read()
            generation = deployment.metadata.generation or 0
            template = deployment.spec.template
            in_place = template_version(template) == stable and template_canary(template) == split
            if in_place and rollout_status(deployment, generation)[0] == "complete":
                self._record(self.target, "unchanged", split.version, f"{split.describe()} already rolled out")
                return self.events
            if not any(c.name == CONTAINER for c in template.spec.containers):
                raise _NotComplete(f"its pod template has no container named {CONTAINER}")
            deployment = self._patch(split_patch(split, stable))
            patched = True
            generation = deployment.metadata.generation
            detail = f"{split.weight:.0%} of users, stable v{stable}, generation {generation}"
            self._record(self.target, "canary", split.version, detail)
            line = self._watch(generation)
            self._record(self.target, "ready", split.version, line.split(": ", 1)[1])
            return self.events
        except (_NotComplete, ApiException, HTTPError) as exc:
            raise self._failed(exc, f"canary of v{split.version}", split.version, patched, stable) from None

    def _previous_replica_set(self, deployment: V1Deployment, previous: int) -> V1ReplicaSet | None:
        """The Deployment's newest ReplicaSet whose template names `previous` and no canary; else its newest one
        older than the current revision that names neither (it serves `production`, still `previous`). A template
        with a canary is never the way back: rolling back puts every user on `previous`."""
        labels = deployment.spec.selector.match_labels or {}
        selector = ",".join(f"{key}={value}" for key, value in sorted(labels.items()))
        listed = self.apps_api.list_namespaced_replica_set(self.namespace, label_selector=selector).items
        owned = [
            rs
            for rs in listed
            if any(
                ref.kind == "Deployment" and ref.uid == deployment.metadata.uid
                for ref in rs.metadata.owner_references or []
            )
        ]
        owned = [rs for rs in owned if not names_canary(rs.spec.template)]
        carrying = [rs for rs in owned if template_version(rs.spec.template) == previous]
        if carrying:
            return max(carrying, key=_revision)
        current = _revision(deployment)
        older = [rs for rs in owned if _revision(rs) < current and template_version(rs.spec.template) is None]
        return max(older, key=_revision, default=None)

    def roll_back(self, previous: int | None) -> bool:
        """Put the Deployment's template back to the previous ReplicaSet's (`kubectl rollout undo`; never one with a
        canary) and wait for that rollout; False if there is nothing to go back to or it did not complete."""
        if previous is None:
            self._record(self.target, "rollback failed", None, "no previous version: nothing to roll back to")
            return False
        from kubernetes.client.exceptions import ApiException
        from urllib3.exceptions import HTTPError

        try:
            deployment = self._read()
            replica_set = self._previous_replica_set(deployment, previous)
            if replica_set is None:
                self._record(
                    self.target, "rollback failed", previous, f"no ReplicaSet of the Deployment serves v{previous}"
                )
                return False
            template = copy.deepcopy(replica_set.spec.template)
            (template.metadata.labels or {}).pop("pod-template-hash", None)
            self.guard()
            deployment = self.apps_api.patch_namespaced_deployment(
                self.deployment,
                self.namespace,
                [{"op": "replace", "path": "/spec/template", "value": template}],
                _content_type="application/json-patch+json",
            )
            self._watch(deployment.metadata.generation)
        except (_NotComplete, ApiException, HTTPError) as exc:
            self._record(self.target, "rollback failed", previous, _reason(exc))
            return False
        self._record(self.target, "rolled back", previous, f"template of revision {_revision(replica_set)}")
        return True


def _revision(obj: Any) -> int:
    return int((obj.metadata.annotations or {}).get(REVISION_ANNOTATION) or 0)


def _reason(exc: Exception) -> str:
    """One line: the Kubernetes API's status and message (an ApiException), or the exception's own."""
    status = getattr(exc, "status", None)
    if status is not None:
        try:
            message = json.loads(exc.body)["message"]
        except (TypeError, ValueError, KeyError):
            message = exc.reason
        return f"Kubernetes API {status}: {message}"
    return " ".join(str(exc).split()) or type(exc).__name__
