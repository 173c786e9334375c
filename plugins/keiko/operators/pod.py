"""KeikoPodOperator: the same `keiko stage|gate ...` command as KeikoStageOperator, in a pod from the project image.

A KubernetesPodOperator subclass, so everything the provider does (log streaming, XCom sidecar, reattach,
deferrable mode, templated fields) works unchanged; keiko only fixes what the pod runs and asks for.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from airflow.providers.cncf.kubernetes.operators.pod import KubernetesPodOperator
from airflow.sdk.exceptions import AirflowException, AirflowFailException
from kubernetes.client import models as k8s

from keiko.assets import publish_if_moved
from keiko.modeldef import PodSettings
from keiko.operators.links import RunPageLink
from keiko.operators.stage import again_after, defer_until_next_call
from keiko.process import EXIT_SKIPPED, RESULT_FILE_ENV, RETRIES_LEFT_ENV, RUN_ID_ENV, retried, step_arguments
from keiko.run_params import refuse_invalid

# Where KubernetesPodOperator's XCom sidecar reads the task's return value.
XCOM_RESULT_FILE = "/airflow/xcom/return.json"
STAGE_USER_ID = 50000  # the Airflow image's `airflow` user


class KeikoPodOperator(KubernetesPodOperator):
    """Run one keiko stage (or gate) for one model and day as a Kubernetes pod.

    :param model: model name (a folder under include/models/)
    :param stage: stage or gate suite name
    :param kind: "stage" or "gate"
    :param ds: the run's day, YYYY-MM-DD (templated, through `arguments`)
    :param env: extra environment for the stage (templated, through `env_vars`)
    :param pod: requests, limits, node selector and tolerations (model.yaml `pods:`)
    :param image: the project image
    :param service_account_name: service account of the pod
    :param env_secret: Secret whose keys become the pod's environment (credentials, tokens)
    :param configmap: ConfigMap whose keys become the pod's environment (the KEIKO_* settings)
    """

    template_fields: Sequence[str] = (*KubernetesPodOperator.template_fields, "ds")  # ds: for the run page link
    operator_extra_links = (RunPageLink(),)
    ui_color = "#dbe9f6"

    def __init__(
        self,
        *,
        model: str,
        stage: str,
        kind: str = "stage",
        ds: str = "{{ ds }}",
        env: dict[str, str] | None = None,
        pod: PodSettings | None = None,
        repeat: bool = False,
        image: str,
        namespace: str,
        service_account_name: str,
        env_secret: str,
        configmap: str,
        **kwargs: Any,
    ) -> None:
        pod = pod or PodSettings()
        super().__init__(
            name=f"keiko-{model.replace('_', '-')}-{stage.replace('_', '-')}",
            image=image,
            namespace=namespace,
            cmds=["keiko"],
            arguments=step_arguments(kind, stage, model, ds),
            env_vars={
                **(env or {}),
                RUN_ID_ENV: "{{ run_id }}",
                RETRIES_LEFT_ENV: "{{ [ti.max_tries - ti.try_number, 0] | max }}",
                RESULT_FILE_ENV: XCOM_RESULT_FILE,
            },
            env_from=[
                k8s.V1EnvFromSource(config_map_ref=k8s.V1ConfigMapEnvSource(name=configmap)),
                k8s.V1EnvFromSource(secret_ref=k8s.V1SecretEnvSource(name=env_secret)),
            ],
            container_resources=k8s.V1ResourceRequirements(
                requests=dict(pod.requests) or None, limits=dict(pod.limits) or None
            ),
            node_selector=dict(pod.node_selector) or None,
            tolerations=[k8s.V1Toleration(**t.model_dump(exclude_none=True)) for t in pod.tolerations] or None,
            service_account_name=service_account_name,
            labels={
                "app.kubernetes.io/part-of": "keiko",
                "keiko.io/model": model,
                "keiko.io/task": stage if kind == "stage" else f"gate-{stage}",
            },
            security_context=k8s.V1PodSecurityContext(
                run_as_non_root=True,
                run_as_user=STAGE_USER_ID,
                seccomp_profile=k8s.V1SeccompProfile(type="RuntimeDefault"),
            ),
            container_security_context=k8s.V1SecurityContext(
                allow_privilege_escalation=False, capabilities=k8s.V1Capabilities(drop=["ALL"])
            ),
            # A failed pod stays for `kubectl logs/describe`; a succeeded one goes.
            on_finish_action="delete_succeeded_pod",
            skip_on_exit_code=EXIT_SKIPPED,
            do_xcom_push=True,
            get_logs=True,
            log_events_on_failure=True,
            **kwargs,
        )
        self.model = model
        self.ds = ds
        self.stage = stage
        self.kind = kind
        self.repeat = repeat

    def execute(self, context: Any) -> Any:
        refuse_invalid(self.model, context.get("params", {}))  # before a pod is started
        returned = super().execute(context)
        if self.repeat and (wait := again_after(returned)) is not None:
            defer_until_next_call(self, wait)  # the next call is a new pod
        publish_if_moved(context, self.outlets, self.model, returned)
        return returned

    def call_again(self, context: Any, event: Any = None) -> Any:
        return self.execute(context)

    def cleanup(self, pod: k8s.V1Pod, remote_pod: k8s.V1Pod, *args: Any, **kwargs: Any) -> None:
        """As the provider's, but a user error or a failed gate (keiko.process.NOT_RETRIED) fails the task without
        retries, as KeikoStageOperator does: the provider has `skip_on_exit_code`, no such setting for failing."""
        try:
            super().cleanup(pod, remote_pod, *args, **kwargs)
        except AirflowException as exc:
            code = exit_code(remote_pod, self.base_container_name)
            if code is not None and not retried(code):
                raise AirflowFailException(str(exc)) from exc
            raise


def exit_code(remote_pod: k8s.V1Pod | None, container: str) -> int | None:
    """The exit code of the pod's `container`, once it has terminated."""
    statuses = (remote_pod.status.container_statuses if remote_pod and remote_pod.status else None) or []
    status = next((s for s in statuses if s.name == container), None)
    terminated = status.state.terminated if status and status.state else None
    return terminated.exit_code if terminated else None
