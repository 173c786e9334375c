"""The steps of every model's two DAGs, in order: the lists the DAGs, their docs, the command line, the run
record, the pages and model.yaml's checks derive from. PIPELINE is the model DAG's (`keiko_<model>`: retrain,
judge, deploy); MONITOR the monitor DAG's (`keiko_monitor_<model>`: what the served model did on a past day).

A step is a stage (`keiko stage <name>`, module keiko.stages.<name>) or a gate (task id `gate_<suite>`,
`keiko gate <suite>`, module keiko.gates.<suite>). Each runs after the step before it unless it names its
upstream steps and a trigger rule (an Airflow TriggerRule value; strings here, so that importing this
module imports no Airflow).
"""

from __future__ import annotations

from dataclasses import dataclass

GATE_PREFIX = "gate_"
ALL_SUCCESS = "all_success"
ONE_FAILED = "one_failed"  # a step that runs only when one before it failed (rollback)
ALL_DONE_MIN_ONE_SUCCESS = "all_done_min_one_success"
# Runs when no upstream step failed and one succeeded: deploy after register and an online model's skipped batch steps.
NONE_FAILED_MIN_ONE_SUCCESS = "none_failed_min_one_success"
MODEL_DAG, MONITOR_DAG = "model", "monitor"  # which of a model's DAGs a step belongs to
# Steps whose command is called again while its result says `running`, after `next_check_seconds`: Airflow defers
# between the calls (keiko.operators.stage.RepeatingStageOperator), `keiko run` sleeps.
REPEATED = ("canary",)
# Between canary and promote in the model DAG: Airflow's human-in-the-loop task (keiko.operators.approval), skipped
# unless the canary's result awaits a person's decision; no `keiko` command. `keiko run` has no such task: its
# promote then says how to decide.
APPROVAL = "approve_promotion"
APPROVED_STEP = "promote"  # the step after it
# The model DAG's first task, before its steps: a sensor (keiko.operators.sensors), no `keiko` command. It records a
# failure in the run record as the steps do, so that the run page, `keiko why` and `keiko status` name it.
DATA_WAIT = "wait_for_data"


@dataclass(frozen=True)
class Step:
    task_id: str
    does: str  # one line: what the step does, for the DAG's doc and the run page
    triage: str  # one line: what its failure means and what to do, for the DAG's doc
    after: tuple[str, ...] = ()  # upstream task ids; empty: the step before it
    trigger_rule: str = ALL_SUCCESS
    dag: str = MODEL_DAG
    # Runs only when a step before it asks for it (promote: when a person's decision is awaited); a good run may end
    # before it, and then Airflow skips it without running it, so it records nothing.
    optional: bool = False

    @property
    def kind(self) -> str:
        return "gate" if self.task_id.startswith(GATE_PREFIX) else "stage"

    @property
    def name(self) -> str:
        """What the command line calls it: the stage, or the gate's suite."""
        return self.task_id.removeprefix(GATE_PREFIX)

    @property
    def command(self) -> str:
        return f"keiko {self.kind} {self.name}"

    @property
    def module(self) -> str:
        return f"keiko.{self.kind}s.{self.name}"

    @property
    def on_failure_only(self) -> bool:
        """Runs only when a step before it failed: absent from a run that went well."""
        return self.trigger_rule == ONE_FAILED


PIPELINE = (
    Step(
        "extract",
        "renders include/sql/<model>/extract.sql for the data window and runs it on the warehouse",
        "read the last log line: a missing partition names the table and day (logs not landed yet: clear the "
        "task once they have)",
    ),
    Step(
        "gate_raw",
        "schema, types, keys, ranges, daily volume and label rate of the extract",
        "the data is wrong: the table names the column and what was observed; fix the data, then clear the task",
    ),
    Step(
        "features",
        "the model's feature code; time split (test = the run's day, valid = the day before); training profile",
        "see the task log; a missing column names the feature module that needs it",
    ),
    Step(
        "gate_features",
        "feature columns, NaN/inf, drift against production's training profile, test/train label rate",
        "drift or broken features: the table names the column and its KL divergence against the threshold",
    ),
    Step(
        "train",
        "fits model.yaml's algorithm with early stopping on valid; saves it without pickle",
        "see the task log (epochs, losses)",
    ),
    Step(
        "gate_training",
        "the loss went down and settled; artifact size and load memory in budget; sane predictions",
        "training did not converge or the model is over budget: see the table",
    ),
    Step(
        "evaluate",
        "candidate and production on the same out-of-time test rows; golden set for serving",
        "see the task log; production's artifact is verified against its registry sha256",
    ),
    Step(
        "gate_evaluation",
        "the blessing: absolute thresholds and no regression against production",
        "the candidate was not blessed; register still records it as `rejected`, deploy skips, production "
        "keeps serving",
    ),
    Step(
        "register",
        "records the version with its lineage (registered, rejected or historical); idempotent",
        "a missing or stale blessing: rerun evaluate and gate_evaluation",
        after=("gate_evaluation", "evaluate"),  # also after a failed gate_evaluation: records `rejected`
        trigger_rule=ALL_DONE_MIN_ONE_SUCCESS,
    ),
    Step(
        "batch_score",
        "a batch model (serving.mode batch): scores the run's key set with the registered version into the batch "
        "store, beside the serving batch (skipped for online models)",
        "see the task log (chunks, keys/s); a failed batch leaves the serving one untouched: clear the task to "
        "score again",
    ),
    Step(
        "gate_batch",
        "a batch model's batch: coverage of the key set, scores against the serving batch's, store latency",
        "the batch is incomplete, its scores moved, or the store is slow: the table says which; the pointer did "
        "not move, the serving batch keeps answering",
    ),
    Step(
        "deploy",
        "puts a registered version into production through the production path (keiko.rollout.production); a "
        "batch model's by moving the batch store's pointer to its batch",
        "the servers did not confirm the version (those moved were put back), or another change of production "
        "held the model's lease past the wait: the alias did not move. (Skipped is no failure: the version is "
        "rejected or history, or the run asked deploy=skip)",
        after=("gate_batch", "register"),
        trigger_rule=NONE_FAILED_MIN_ONE_SUCCESS,
    ),
    Step(
        "gate_serving",
        "the live servers answer the golden rows as offline, as the deployed version, within the latency budget",
        "training/serving skew or a slow server; it changes nothing itself: `rollback` reverts",
    ),
    Step(
        "canary",
        "a canary or A/B deploy: judges each step on online signals against stable, then advances, promotes or "
        "reverts (skipped after a rolling deploy)",
        "the canary breached (the verdict table names the check) or held too long without enough traffic or "
        "outcomes: every user is back on stable already; `keiko status` shows the timeline",
    ),
    Step(
        "promote",
        f"only after {APPROVAL} (an A/B winner, a canary's thin margin or a forced deploy): promotes the canary or "
        "keeps stable, as the person chose",
        "the choice could not be applied (production moved since, or a server refused): every user is on stable; "
        "`keiko status`",
        optional=True,
    ),
    Step(
        "rollback",
        "only after a failure: takes the deployed version out of production through the production path",
        "production could not be reverted (no previous version, or it moved since): `keiko status`, then "
        "`keiko rollback <model> --to V`",
        after=("gate_serving", "canary", "promote"),
        trigger_rule=ONE_FAILED,
    ),
)
# The monitor of day D runs once D's outcomes are in (model.yaml monitor.attribution_hours): Airflow's sensors
# wait for the partitions first (keiko.dag_factory), then these steps judge the day per serving version.
MONITOR = (
    Step(
        "join_outcomes",
        "renders include/sql/<model>/monitor.sql for the day: each answer the servers logged, with its outcome",
        "a missing partition names the table and day: outcomes or the prediction log not landed; clear the task "
        "once they have",
        dag=MONITOR_DAG,
    ),
    Step(
        "gate_online",
        "online logloss, AUC and calibration per serving version, against its own offline evaluation",
        "the served model is wrong on live traffic: the table names the version and metric; a calibration "
        "breach with unchanged inputs is the world moving (retrain), with drift it is the inputs (gate_drift)",
        after=("join_outcomes",),
        dag=MONITOR_DAG,
    ),
    Step(
        "gate_drift",
        "predictions and every input field against the serving version's training profile; unseen values",
        "the served inputs are not what the version trained on: the table names the field; unseen values of a "
        "known field are often a client sending it in another form",
        after=("join_outcomes",),
        dag=MONITOR_DAG,
    ),
    Step(
        "gate_volume",
        "answered share of the day's impressions, and training rows and offline logloss across runs (trend)",
        "answers missing from the prediction log (drops: the servers' /metrics), or training data shrinking "
        "run after run: the table names the series and its daily change",
        after=("join_outcomes",),
        dag=MONITOR_DAG,
    ),
)
STEPS = {step.task_id: step for step in (*PIPELINE, *MONITOR)}
TASK_IDS = tuple(step.task_id for step in PIPELINE)  # the model DAG's
MONITOR_TASK_IDS = tuple(step.task_id for step in MONITOR)
STAGES = tuple(step.name for step in STEPS.values() if step.kind == "stage")
SUITES = tuple(step.name for step in STEPS.values() if step.kind == "gate")


def task_id(kind: str, name: str) -> str:
    """The task id of `keiko <kind> <name>`: stages keep their name, gates get `gate_`."""
    return name if kind == "stage" else f"{GATE_PREFIX}{name}"


def upstream(step: Step) -> tuple[str, ...]:
    """The task ids `step` runs after."""
    if step.after:
        return step.after
    chain = steps_of(step.dag)
    index = chain.index(step)
    return (chain[index - 1].task_id,) if index else ()


def steps_of(dag: str) -> tuple[Step, ...]:
    """The steps of one of a model's DAGs (MODEL_DAG or MONITOR_DAG), in order."""
    return MONITOR if dag == MONITOR_DAG else PIPELINE
