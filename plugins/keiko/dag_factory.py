"""Builds two DAGs per include/models/<model>/model.yaml: `keiko_<model>` (retrain, judge, deploy) and
`keiko_monitor_<model>` (what the served model did on a past day, once its outcomes are in).

Parse-time work is reading the YAMLs: no data, no network, no training libraries.
"""

from __future__ import annotations

import datetime as dt
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path
from typing import Any

from airflow.sdk import (
    DAG,
    AsyncCallback,
    BaseOperator,
    CronDataIntervalTimetable,
    DeadlineAlert,
    DeadlineReference,
    Param,
    TriggerRule,
)

from keiko import alerts
from keiko.assets import production_alias
from keiko.config import settings
from keiko.errors import KeikoError, ModelConfigError
from keiko.modeldef import ModelDefinition, load_model, model_names
from keiko.operators.approval import PromotionApprovalOperator
from keiko.operators.sensors import DataWindowSensor, partition_sensor
from keiko.operators.stage import KeikoStageOperator
from keiko.pipeline import ALL_SUCCESS, APPROVAL, APPROVED_STEP, DATA_WAIT, MONITOR, PIPELINE, REPEATED, Step, upstream
from keiko.process import APPROVAL_ENV, APPROVED_BY_ENV, RUN_TYPE_ENV
from keiko.run_params import RUN_PARAMS_ENV, param_specs

STAGE_RETRIES = 2
STAGE_TIMEOUT = dt.timedelta(hours=2)
APPROVAL_DOES = (
    "asks a person in the Airflow UI (Required Actions: Promote or Keep stable, the evidence in its body) when the "
    "canary awaits a decision, for up to {hours:g} h, then keeps stable; skipped otherwise"
)
APPROVAL_TRIAGE = (
    "the answer could not be recorded; the canary still serves at its weight: answer again by clearing the task, or "
    "`keiko rollback <model>` to end it"
)
WAIT_DOES = "waits, deferred, for every partition the run's extract reads (up to {hours:g} h)"
PRODUCTION_CHANGERS = ("deploy", "canary", "promote", "rollback")  # the tasks that may move production (keiko.assets)


DOC_TEMPLATE = """\
# keiko_{name}

{description}

Retrains **{name}** every day on the last {window_days} days of warehouse data, evaluates it against
the production model on the out-of-time test day (the run's `ds`), registers it with its lineage
and deploys it only when it is not worse than production.

{chain}

Stages run `keiko stage <task> --model {name} --ds <ds>`, gates `keiko gate <suite> --model {name} --ds <ds>`:
any task can be rerun by hand with that command. Every artifact is under `<artifact_root>/{name}/<ds>/`, and
the **Run page** link of any task shows the run.

**Owner:** {owner} &nbsp; **Algorithm:** `{algorithm}` &nbsp; **Schedule:** `{schedule}` (UTC)

## Steps

{steps}

A run still unfinished {deadline:g} h after it was queued posts a *run late* alert. Each move of production
(a rolling deploy, a canary's promotion, a rollback) updates the Asset `keiko://{name}/production`, which downstream
DAGs can schedule on.

## Triage

- *{wait} failed*: the window's logs had not all landed after {wait_hours:g} h (the log's last line names the
  partitions): clear the task once they have. Waiting, it shows *deferred* and holds no worker slot.
{triage}
- *any gate failed*: its log ends with a table (suite, expectation, column, observed, expected) and a
  one-line verdict; Data Docs are linked from the run page. Gates never retry: fix the data (or the
  threshold in `model.yaml`, if it cried wolf) and clear the task.
- *a stage pod failed* (KEIKO_STAGE_RUNNER=kubernetes): failed pods are kept for inspection,
  `kubectl -n <namespace> get pods -l keiko.io/model={name}`; succeeded pods are deleted.
- `keiko why {name} <ds>` says in a few lines why a run did or did not promote its model; `keiko status`
  what serves now.
"""


MONITOR_DOC_TEMPLATE = """\
# keiko_monitor_{name}

What **{name}** did in production on a past day: every answer the model servers logged (the warehouse table
`predictions`) joined with the outcomes that followed, per serving version, against what that version showed
offline and trained on.

The run after day D judges day **D - {lag}** ({schedule} UTC, once the day's outcomes are in: the sources allow
{attribution:g} h after an impression). It first waits, deferred (no worker slot), for the day's partition of
{tables}, for up to {wait:g} h; then:

{chain}

Each step runs `keiko stage|gate <name> --model {name} --ds <judged day>`; `keiko run --model {name} --ds <day>
--monitor` runs a day's monitor on this machine. The files are under `<artifact_root>/{name}/monitor/<day>/`; the
**Run page** link of any task opens the model's monitoring page (the series over 30 and 90 days, deploys,
alarms), and `keiko monitor {name}` prints it in a few lines.

**Owner:** {owner}

## Steps

{steps}

## Triage

- *wait_for_... failed*: the day's partition never landed (timed out after {wait:g} h): the outcome pipeline is
  late; clear the task once it has landed.
{triage}
- *any gate failed*: its log ends with a table (suite and version, expectation, field, observed, expected) and a
  one-line verdict; thresholds are model.yaml's `monitor:` section, with the clean ranges they came from.
"""


def _chain(steps: tuple[Step, ...] = PIPELINE, first: tuple[str, ...] = (DATA_WAIT,)) -> str:
    """The DAG's graph in words: the chain a good run follows (from the tasks `first`), then every other edge with
    its trigger rule."""
    main = [*first, *(step.task_id for step in steps if not step.on_failure_only)]
    if APPROVED_STEP in main:
        main.insert(main.index(APPROVED_STEP), APPROVAL)
    lines = textwrap.wrap(" >> ".join(main), width=96, break_on_hyphens=False, subsequent_indent="  ")
    for step in steps:
        inputs = upstream(step)
        previous = main[main.index(step.task_id) - 1] if step.task_id in main else None
        in_chain = step.task_id in main and (inputs == (previous,) or previous == APPROVAL)
        if inputs and not (in_chain and step.trigger_rule == ALL_SUCCESS):
            rule = "" if step.trigger_rule == ALL_SUCCESS else f"   (trigger rule {step.trigger_rule})"
            lines.append(f"{' & '.join(inputs)} >> {step.task_id}{rule}")
    return "\n".join(f"    {line}" for line in lines)


def doc_md(definition: ModelDefinition) -> str:
    config = definition.config
    return DOC_TEMPLATE.format(
        name=definition.name,
        description=config.description,
        window_days=config.window_days,
        owner=config.owner,
        algorithm=config.algorithm.name,
        schedule=config.schedule,
        chain=_chain(),
        wait=DATA_WAIT,
        wait_hours=config.run.wait_for_data_hours,
        deadline=config.run.deadline_hours,
        steps=_steps_table(
            PIPELINE,
            **{DATA_WAIT: WAIT_DOES.format(hours=config.run.wait_for_data_hours)},
            after={APPROVED_STEP: (APPROVAL, APPROVAL_DOES.format(hours=config.deploy.approval_hours))},
        ),
        triage="\n".join(
            [
                *(f"- *{step.task_id} failed*: {step.triage}" for step in PIPELINE),
                f"- *{APPROVAL} failed*: {APPROVAL_TRIAGE}",
            ]
        ),
    )


def _steps_table(steps: tuple[Step, ...], after: dict[str, tuple[str, str]] | None = None, **before: str) -> str:
    """The steps as a Markdown table, after the tasks `before` (task id: what it does) that are no keiko step, and
    with the one `after` names for a step (its task id and what it does) before that step."""
    after = after or {}
    rows = list(before.items())
    for step in steps:
        if step.task_id in after:
            rows.append(after[step.task_id])
        rows.append((step.task_id, step.does))
    return "\n".join(f"| `{task_id}` | {does} |" for task_id, does in rows).join(("| task | does |\n|---|---|\n", ""))


def _monitor_chain(tables: Any) -> str:
    """The monitor's graph in words: the sensors, the join, then the gates side by side after it."""
    first, *gates = MONITOR
    assert all(upstream(step) == (first.task_id,) for step in gates), "the monitor's gates all follow its join"
    waits = ", ".join(f"wait_for_{table}" for table in tables)
    return f"    [{waits}] >> {first.task_id} >> [{', '.join(step.task_id for step in gates)}]"


def monitor_doc_md(definition: ModelDefinition) -> str:
    config = definition.config
    return MONITOR_DOC_TEMPLATE.format(
        name=definition.name,
        lag=config.monitor_lag_days,
        schedule=config.monitor.schedule,
        attribution=config.attribution_hours,
        tables=", ".join(f"`{table}`" for table in config.sources),
        wait=config.monitor.wait_hours,
        chain=_monitor_chain(config.sources),
        owner=config.owner,
        steps=_steps_table(MONITOR),
        triage="\n".join(f"- *{step.task_id} failed*: {step.triage}" for step in MONITOR),
    )


def _run_policy(definition: ModelDefinition) -> dict[str, Any]:
    """What both of a model's DAGs share: start, one run at a time, the owner, retries and the failure alerts."""
    config = definition.config
    return {
        "start_date": dt.datetime.combine(config.start_date, dt.time(), tzinfo=dt.UTC),
        "catchup": False,
        "max_active_runs": 1,
        "default_args": {
            "owner": config.owner,
            "retries": STAGE_RETRIES,
            "retry_delay": dt.timedelta(minutes=5),
            "retry_exponential_backoff": True,
            "execution_timeout": STAGE_TIMEOUT,
            "on_failure_callback": alerts.on_task_failure,
        },
        "on_failure_callback": alerts.on_run_failure,
    }


def build_dag(definition: ModelDefinition) -> DAG:
    config = definition.config
    dag = DAG(
        dag_id=f"keiko_{definition.name}",
        description=config.description or f"retrain, evaluate, register and deploy {definition.name}",
        schedule=CronDataIntervalTimetable(config.schedule, timezone="UTC"),
        tags=["keiko", f"model:{definition.name}", f"owner:{config.owner}"],
        params={
            name: Param(spec.default, description=spec.description, section=spec.section, **spec.schema)
            for name, spec in param_specs(config).items()
        },
        doc_md=doc_md(definition),
        deadline=None if _in_dags_test() else _deadline(definition),
        **_run_policy(definition),
    )
    with dag:
        wait = DataWindowSensor(
            task_id=DATA_WAIT,
            model=definition.name,
            timeout=dt.timedelta(hours=config.run.wait_for_data_hours).total_seconds(),
            retries=0,  # its timeout is the wait; a retry would only start it again
            execution_timeout=None,
        )
        approval = PromotionApprovalOperator(
            task_id=APPROVAL,
            model=definition.name,
            canary_task_id="canary",
            response_timeout=dt.timedelta(hours=config.deploy.approval_hours),
            retries=0,  # a person's answer, or the timeout's default: nothing to retry
        )
        answer = f"(ti.xcom_pull(task_ids='{APPROVAL}') or {{}})"  # the person's answer, when there was one
        tasks = _step_tasks(
            definition,
            PIPELINE,
            before={APPROVED_STEP: approval},
            env={RUN_TYPE_ENV: "{{ dag_run.run_type }}", RUN_PARAMS_ENV: "{{ params | tojson }}"},
            env_of={
                APPROVED_STEP: {
                    APPROVAL_ENV: f"{{{{ {answer}.get('chosen_options', [''])[0] }}}}",
                    APPROVED_BY_ENV: f"{{{{ ({answer}.get('responded_by_user') or {{}}).get('name', '') }}}}",
                }
            },
        )
        wait >> tasks[PIPELINE[0].task_id]
        for task_id in PRODUCTION_CHANGERS:
            tasks[task_id].outlets = [production_alias(definition.name)]
        for step in PIPELINE:
            if step.on_failure_only:
                # Airflow decides a run's state by its leaf tasks, and a skipped leaf counts as success: as a
                # teardown, rollback leaves that to gate_serving, so a failed run stays failed however the
                # rollback ends (and clearing gate_serving clears its rollback too). It keeps its own rule.
                tasks[step.task_id].as_teardown()
                tasks[step.task_id].trigger_rule = TriggerRule(step.trigger_rule)
    return dag


def _deadline(definition: ModelDefinition) -> DeadlineAlert:
    """A run still unfinished run.deadline_hours after it was queued posts a "run late" alert, from the triggerer."""
    return DeadlineAlert(
        reference=DeadlineReference.DAGRUN_QUEUED_AT,
        interval=dt.timedelta(hours=definition.config.run.deadline_hours),
        callback=AsyncCallback(alerts.on_deadline_missed, kwargs={"model": definition.name}),
    )


def _in_dags_test() -> bool:
    """`airflow dags test` parses the DAG file in its own process, and on Airflow 3.3.2 fails every run of a DAG with
    a deadline once it has succeeded (apache/airflow#73428, open). Its runs are the demo's and the tests': no
    scheduler watches their deadline anyway."""
    return sys.argv[1:3] == ["dags", "test"]


def _step_tasks(
    definition: ModelDefinition,
    steps: tuple[Step, ...],
    *,
    env: dict[str, str],
    before: dict[str, BaseOperator] | None = None,
    env_of: dict[str, dict[str, str]] | None = None,
    **common: Any,
) -> dict[str, BaseOperator]:
    """One task per step, `keiko stage|gate <name>` as KEIKO_STAGE_RUNNER runs it, with `env` (and the step's own
    in `env_of`), linked to its upstream steps (through the Airflow-only task `before` names for it, if any)."""
    before, env_of = before or {}, env_of or {}
    make_task = _task_builder(definition)
    tasks: dict[str, BaseOperator] = {}
    for step in steps:
        tasks[step.task_id] = make_task(
            task_id=step.task_id,
            model=definition.name,
            stage=step.name,
            kind=step.kind,
            trigger_rule=TriggerRule(step.trigger_rule),
            # A failed expectation is deterministic: retrying a gate only delays the page.
            **({"retries": 0} if step.kind == "gate" else {}),
            # A repeated step's own plan bounds it (a canary's steps and holds), not the stage timeout.
            **({"repeat": True, "execution_timeout": None} if step.task_id in REPEATED else {}),
            env={**env, **env_of.get(step.task_id, {})},
            **common,
        )
        for upstream_id in upstream(step):
            if step.task_id in before:
                tasks[upstream_id] >> before[step.task_id] >> tasks[step.task_id]
            else:
                tasks[upstream_id] >> tasks[step.task_id]
    return tasks


def build_monitor_dag(definition: ModelDefinition) -> DAG:
    config = definition.config
    monitor = config.monitor
    lag = config.monitor_lag_days
    judged_day = f"{{{{ macros.ds_add(ds, -{lag}) }}}}" if lag else "{{ ds }}"
    dag = DAG(
        dag_id=f"keiko_monitor_{definition.name}",
        description=f"{definition.name} in production: logged answers against their outcomes, per version",
        schedule=CronDataIntervalTimetable(monitor.schedule, timezone="UTC"),
        tags=["keiko", "monitor", f"model:{definition.name}", f"owner:{config.owner}"],
        doc_md=monitor_doc_md(definition),
        **_run_policy(definition),
    )
    with dag:
        waits = [
            partition_sensor(
                task_id=f"wait_for_{table}",
                table=table,
                day=judged_day,
                config=settings(),
                wait=dt.timedelta(hours=monitor.wait_hours),
                retries=0,  # the sensor's own timeout is the wait; a retry would only restart it
                execution_timeout=None,
            )
            for table in config.sources
        ]
        tasks = _step_tasks(definition, MONITOR, ds=judged_day, env={RUN_TYPE_ENV: "{{ dag_run.run_type }}"})
        waits >> tasks[MONITOR[0].task_id]  # the join; the gates follow it
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
            dags[f"keiko_monitor_{name}"] = build_monitor_dag(definition)
        except KeikoError as exc:
            problems.append(str(exc))
    if problems:
        raise ModelConfigError("invalid model definitions: " + " | ".join(problems))
    return dags
