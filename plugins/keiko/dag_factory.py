"""Builds one DAG `keiko_<model>` per include/models/<model>/model.yaml.

Parse-time work is reading the YAMLs: no data, no network, no training libraries.
"""

from __future__ import annotations

import datetime as dt
import itertools
from collections.abc import Callable
from pathlib import Path
from typing import Any

from airflow.sdk import DAG, BaseOperator, CronDataIntervalTimetable, Param, TriggerRule

from keiko import alerts
from keiko.config import settings
from keiko.errors import KeikoError, ModelConfigError
from keiko.modeldef import ModelDefinition, load_model, model_names
from keiko.operators.stage import KeikoStageOperator
from keiko.pipeline import PIPELINE
from keiko.run_params import RUN_PARAMS_ENV, param_specs

STAGE_RETRIES = 2
STAGE_TIMEOUT = dt.timedelta(hours=2)

DOC_TEMPLATE = """\
# keiko_{name}

{description}

Retrains **{name}** every day on the last {window_days} days of warehouse data, evaluates it against
the production model on the out-of-time test day (the run's `ds`), registers it with its lineage
and deploys it only when it is not worse than production.

`extract >> gate_raw >> features >> gate_features >> train >> gate_training >> evaluate >>
gate_evaluation >> register >> deploy`. Stages run `keiko stage <task> --model {name} --ds <ds>`,
gates `keiko gate <suite> --model {name} --ds <ds>`: any task can be rerun by hand with that command.

**Owner:** {owner} &nbsp; **Algorithm:** `{algorithm}` &nbsp; **Schedule:** `{schedule}` (UTC)

## Triage
- *a gate failed*: the log ends with a table (suite, expectation, column, observed, expected) and a
  one-line verdict; Data Docs are under `<artifacts>/{name}/<ds>/gates/<suite>/data_docs/index.html`.
  Gates do not retry: fix the data (or the threshold in `model.yaml`, if it cried wolf) and clear the task.
- *gate_evaluation failed*: the candidate was not blessed (below a threshold or worse than
  production); register still records it as `rejected` and deploy skips. Production keeps serving.
- *extract failed*: read the last log line; a missing partition names the table and day
  (logs not landed yet: clear the task once they have).
- *train/evaluate failed*: see the task log; artifacts are under `{{artifact_root}}/{name}/<ds>/`.
- *deploy skipped*: the version was registered as rejected; the log gives the blessing's reasons.
- *a stage pod failed* (KEIKO_STAGE_RUNNER=kubernetes): failed pods are kept for inspection,
  `kubectl -n <namespace> get pods -l keiko.io/model={name}`; succeeded pods are deleted.
- *deploy failed*: the model server did not confirm the new version; the `production` alias
  did not move. `keiko models list {name}` shows what serves.
"""


def build_dag(definition: ModelDefinition) -> DAG:
    config = definition.config
    dag = DAG(
        dag_id=f"keiko_{definition.name}",
        description=config.description or f"retrain, evaluate, register and deploy {definition.name}",
        schedule=CronDataIntervalTimetable(config.schedule, timezone="UTC"),
        start_date=dt.datetime.combine(config.start_date, dt.time(), tzinfo=dt.UTC),
        catchup=False,
        max_active_runs=1,
        tags=["keiko", f"model:{definition.name}", f"owner:{config.owner}"],
        params={
            name: Param(spec.default, description=spec.description, section=spec.section, **spec.schema)
            for name, spec in param_specs(config).items()
        },
        doc_md=DOC_TEMPLATE.format(
            name=definition.name,
            description=config.description,
            window_days=config.window_days,
            owner=config.owner,
            algorithm=config.algorithm.name,
            schedule=config.schedule,
        ),
        default_args={
            "owner": config.owner,
            "retries": STAGE_RETRIES,
            "retry_delay": dt.timedelta(minutes=5),
            "retry_exponential_backoff": True,
            "execution_timeout": STAGE_TIMEOUT,
            "on_failure_callback": alerts.on_task_failure,
        },
        on_failure_callback=alerts.on_run_failure,
    )
    make_task = _task_builder(definition)
    with dag:
        tasks = {}
        for step, kind in PIPELINE:
            tasks[step] = make_task(
                task_id=step,
                model=definition.name,
                stage=step.removeprefix("gate_"),
                kind=kind,
                env={"KEIKO_RUN_TYPE": "{{ dag_run.run_type }}", RUN_PARAMS_ENV: "{{ params | tojson }}"},
                # A failed expectation is deterministic: retrying a gate only delays the page.
                **({"retries": 0} if kind == "gate" else {}),
            )
        for (upstream, _), (downstream, _) in itertools.pairwise(PIPELINE):
            tasks[upstream] >> tasks[downstream]
        # register also runs after a failed gate_evaluation, to record the candidate as rejected;
        # it reads the blessing and refuses to guess when there is none.
        tasks["evaluate"] >> tasks["register"]
        tasks["register"].trigger_rule = TriggerRule.ALL_DONE_MIN_ONE_SUCCESS
    return dag


def _task_builder(definition: ModelDefinition) -> Callable[..., BaseOperator]:
    """KEIKO_STAGE_RUNNER picks how every task runs: a local subprocess, or a pod from the project image."""
    config = settings()
    if config.stage_runner == "local":
        return KeikoStageOperator
    from keiko.operators.pod import KeikoPodOperator  # the Kubernetes client is imported only when used

    def make_pod_task(*, task_id: str, **kwargs: Any) -> BaseOperator:
        return KeikoPodOperator(
            task_id=task_id,
            pod=definition.config.pod(task_id),
            image=config.image,
            namespace=config.kubernetes_namespace,
            kubernetes_conn_id=config.kubernetes_conn_id,
            service_account_name=config.kubernetes_service_account,
            env_secret=config.kubernetes_env_secret,
            configmap=config.kubernetes_configmap,
            **kwargs,
        )

    return make_pod_task


def build_dags(models_dir: Path | None = None) -> dict[str, DAG]:
    """All model DAGs; any invalid model.yaml fails the whole file, naming every broken file and field.

    Failing loudly (an import error in the Airflow UI and in the DagBag test) beats a model
    whose DAG silently disappears.
    """
    settings()  # a bad KEIKO_* value fails the file with its own message, not as a broken model
    dags: dict[str, DAG] = {}
    problems: list[str] = []
    for name in model_names(models_dir):
        try:
            definition = load_model(name, models_dir)
            dags[f"keiko_{name}"] = build_dag(definition)
        except KeikoError as exc:
            problems.append(str(exc))
    if problems:
        raise ModelConfigError("invalid model definitions: " + " | ".join(problems))
    return dags
