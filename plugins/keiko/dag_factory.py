"""Builds one DAG `keiko_<model>` per include/models/<model>/model.yaml.

Parse-time work is reading the YAMLs: no data, no network, no training libraries.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

from airflow.sdk import DAG, CronDataIntervalTimetable

from keiko.errors import KeikoError, ModelConfigError
from keiko.modeldef import ModelDefinition, load_model, model_names
from keiko.operators.stage import KeikoStageOperator
from keiko.stages import STAGES

STAGE_RETRIES = 2
STAGE_TIMEOUT = dt.timedelta(hours=2)

DOC_TEMPLATE = """\
# keiko_{name}

{description}

Retrains **{name}** every day on the last {window_days} days of warehouse data, evaluates it against
the production model on the out-of-time test day (the run's `ds`), registers it with its lineage
and deploys it only when it is not worse than production.

`extract >> features >> train >> evaluate >> register >> deploy`; each task runs
`keiko stage <task> --model {name} --ds <ds>`, so any task can be rerun by hand with the same command.

**Owner:** {owner} &nbsp; **Algorithm:** `{algorithm}` &nbsp; **Schedule:** `{schedule}` (UTC)

## Triage
- *extract failed*: read the last log line; a missing partition names the table and day
  (logs not landed yet: clear the task once they have).
- *train/evaluate failed*: see the task log; artifacts are under `{{artifact_root}}/{name}/<ds>/`.
- *deploy skipped*: the candidate was worse than production; the log gives both loglosses.
  Production keeps serving; nothing to do unless it repeats.
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
        },
    )
    with dag:
        previous = None
        for stage in STAGES:
            task = KeikoStageOperator(task_id=stage, model=definition.name, stage=stage)
            if previous is not None:
                previous >> task
            previous = task
    return dag


def build_dags(models_dir: Path | None = None) -> dict[str, DAG]:
    """All model DAGs; any invalid model.yaml fails the whole file, naming every broken file and field.

    Failing loudly (an import error in the Airflow UI and in the DagBag test) beats a model
    whose DAG silently disappears.
    """
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
