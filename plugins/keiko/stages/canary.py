"""canary: judge the current step of the run's canary (or A/B experiment), then hold, advance, promote or revert.

The deploy stage started it (keiko.stages.deploy: the new version beside production, to the first step's share of
the users). Each call of this stage is one analysis (keiko.rollout.analysis) of the step so far: what the replicas
counted since it started (/metrics: requests, 5xx, latency by variant) and what the prediction log holds of it,
joined with the outcomes that have landed (monitor.sql). Its table goes to the task log; then, by the verdict:

| verdict | does                                                                                | result / exit     |
|---------|-------------------------------------------------------------------------------------|-------------------|
| hold    | nothing: too little data yet                                                        | running, again    |
| pass    | the next step's weight; after the last, promotes (alias moved, stable replaced)     | running / promoted |
| breach  | every user back on stable (keiko.rollout.production)                                | fails, no retry   |
| timeout | the same: a step still short of data after max_hold_minutes                         | fails, no retry   |

An A/B experiment is one step: once it passes, keiko.rollout.online_stats decides between the versions by online
logloss, the report is written, and model.yaml's `deploy.ab.apply` says whether a better new version is promoted.

The waiting between calls is the caller's: Airflow defers the task (keiko.operators.canary, no worker slot held),
`keiko run` sleeps. Every change goes through the production path, expecting the canary the record says serves.
"""

from __future__ import annotations

import datetime as dt

import pyarrow as pa
import pyarrow.compute as pc

from keiko.config import PREDICTIONS_TABLE
from keiko.contract import (
    CanaryEvent,
    CanaryPointer,
    CanaryRecord,
    CanaryResult,
    CanaryVerdict,
    DeployResult,
    EvaluateResult,
    ModelLayout,
    VariantCounts,
)
from keiko.errors import GateFailed, KeikoError, MissingDataError, StageSkipped
from keiko.modeldef import RolloutPlan
from keiko.rollout import SmokeTest
from keiko.rollout.analysis import StepData, delta, format_verdict, judge
from keiko.rollout.known_answers import golden_rows, known_answers
from keiko.rollout.online_stats import compare_logloss, decide_ab
from keiko.rollout.production import Change, ProductionPath
from keiko.serving.client import ModelServerClient
from keiko.serving.monitoring import summed, variant_counts
from keiko.serving.split import CANARY, STABLE, TrafficSplit
from keiko.stages.context import StageContext
from keiko.stages.deploy import requested_by
from keiko.stages.join_outcomes import OUTCOME
from keiko.warehouse import days_between, render_monitor_sql

ANSWERS = pa.schema(
    [("impression_id", pa.int64()), ("user_id", pa.int64()), ("variant", pa.string()), ("score", pa.float64())]
)
OUTCOMES = pa.schema([("impression_id", pa.int64()), (OUTCOME, pa.int64())])
# The impression days a step's answers may belong to: from the run's day + 1 (the day after its data: what it serves
# first), up to today, at most this many.
ANALYSED_DAYS = 7


def now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def stamp(moment: dt.datetime) -> str:
    return moment.isoformat(timespec="seconds")


def counts(urls: list[str]) -> dict[str, VariantCounts]:
    """What every replica counted so far, by variant."""
    scraped = []
    for url in urls:
        with ModelServerClient(url, timeout=10) as server:
            scraped.append(variant_counts(server.metrics()))
    return summed(scraped)


def start(ctx: StageContext, path: ProductionPath, version: int, stable: int, strategy: str) -> CanaryRecord:
    """The deploy stage's first step: `version` beside `stable` for the first step's share; the record written."""
    plan = ctx.model.config.deploy.plan(strategy)
    salt = f"{ctx.model.name}-v{version}-{ctx.run_id or ctx.ds.isoformat()}"  # a new draw of users per rollout
    first = plan.steps[0]
    golden = ctx.store.read_table(ctx.result(EvaluateResult).golden_uri)
    change = path.change(
        Change(
            action="canary", version=version, expected=stable, split=TrafficSplit(version, first.weight, salt),
            smoke=SmokeTest.from_golden(golden), requested_by=requested_by(ctx, strategy, version),
            reason=ctx.params.reason, note=f"{strategy} run {ctx.run_id or 'cli'}", record_uri=ctx.layout.deploy_record,
            expected_canary=None,
        )
    )  # fmt: skip
    ctx.log(change.message)
    at = stamp(now())
    record = CanaryRecord(
        model=ctx.model.name, strategy=strategy, version=version, stable_version=stable, salt=salt,
        run_id=ctx.run_id or None, state="running", step=1, weight=first.weight, started_at=at, step_started_at=at,
        baseline=counts(path.urls), verdicts=[],
        timeline=[CanaryEvent(at=at, step=1, weight=first.weight, event="started", detail=change.message)],
    )  # fmt: skip
    save(ctx, record)
    ctx.store.write_json(
        ModelLayout(ctx.store, ctx.model.name).canary_pointer,
        CanaryPointer(
            ds=ctx.ds.isoformat(), run_id=ctx.run_id or None, record_uri=ctx.layout.canary_record
        ).model_dump(),
    )
    steps = ", ".join(f"{s.weight:.0%}" for s in plan.steps)
    ctx.log(f"{strategy} of {ctx.model.name} v{version} beside v{stable}: steps {steps}, salt {salt}")
    return record


def save(ctx: StageContext, record: CanaryRecord) -> None:
    ctx.store.write_json(ctx.layout.canary_record, record.model_dump(mode="json"))


def step_data(ctx: StageContext, record: CanaryRecord, urls: list[str], since: dt.datetime) -> StepData:
    """The step so far: the replicas' counts since its start, and every answer logged since, with its outcome
    where the day's outcome partitions have landed."""
    scraped = counts(urls)
    in_step = {v: delta(c, record.baseline.get(v)) for v, c in scraped.items()}
    joined = answers(ctx, record, since).join(labelled_outcomes(ctx), keys="impression_id", join_type="left outer")
    outcome = joined[OUTCOME]
    return StepData(
        counts=in_step, variant=joined["variant"].to_numpy(zero_copy_only=False), score=joined["score"].to_numpy(),
        labelled=pc.is_valid(outcome).to_numpy(zero_copy_only=False),
        user_id=pc.fill_null(joined["user_id"], -1).to_numpy(), outcome=pc.fill_null(outcome, 0).to_numpy(),
    )  # fmt: skip


def answers(ctx: StageContext, record: CanaryRecord, since: dt.datetime) -> pa.Table:
    """The step's answers in the prediction log: served since its start by the two versions of the rollout."""
    if PREDICTIONS_TABLE not in ctx.warehouse.tables():
        return ANSWERS.empty_table()
    moment = since.replace(tzinfo=None).isoformat(sep=" ")
    sql = f"""
        SELECT impression_id, user_id, variant, score
        FROM {PREDICTIONS_TABLE}
        WHERE dt >= '{since.date().isoformat()}' AND model = '{ctx.model.name}'
          AND served_at >= TIMESTAMP '{moment}'
          AND ((variant = '{STABLE}' AND version = {record.stable_version})
               OR (variant = '{CANARY}' AND version = {record.version}))
    """  # every value is ours: a date, a model name checked by modeldef, ints
    return ctx.warehouse.query(sql).cast(ANSWERS)


def labelled_outcomes(ctx: StageContext) -> pa.Table:
    """impression_id -> outcome for the impressions of every day from the run's day + 1 to today whose partitions
    (impressions and outcomes: monitor.sql's tables) have landed; a day still missing one is not labelled yet."""
    first = ctx.ds + dt.timedelta(days=1)
    last = max(first, now().date())
    parts = []
    for day in days_between(first, last)[:ANALYSED_DAYS]:
        sql = render_monitor_sql(ctx.model.monitor_sql_path, day=day, model=ctx.model.name, inputs=[])
        try:
            ctx.warehouse.check_window(sql, day, day, unchecked=frozenset({PREDICTIONS_TABLE}))
        except MissingDataError:
            continue
        table = ctx.warehouse.query(sql)
        parts.append(table.select(["impression_id", OUTCOME]).cast(OUTCOMES))
    return pa.concat_tables(parts) if parts else OUTCOMES.empty_table()


def run(ctx: StageContext) -> CanaryResult:
    deployed = ctx.result(DeployResult)
    if deployed.strategy == "rolling":
        raise StageSkipped(f"deploy of v{deployed.version} was rolling: no canary to judge")
    record = ctx.layout.find(ctx.layout.canary_record, CanaryRecord)
    if record is None:
        raise KeikoError(f"deploy started a {deployed.strategy} but wrote no {ctx.layout.canary_record}")
    plan = ctx.model.config.deploy.plan(record.strategy)
    if not record.running:
        return result(record, plan, f"already {record.state}: {record.message}")
    path = ProductionPath(model=ctx.model, resources=ctx.resources, log=ctx.log)
    started = dt.datetime.fromisoformat(record.step_started_at)
    moment = now()
    step = plan.steps[record.step - 1]
    verdict = judge(
        step_data(ctx, record, path.urls, started), step, plan.analysis, number=record.step,
        held_minutes=(moment - started).total_seconds() / 60, max_hold_minutes=plan.max_hold_minutes, at=stamp(moment),
        experiment=plan.experiment is not None,
    )  # fmt: skip
    ctx.log(format_verdict(verdict))
    record = record.model_copy(update={"verdicts": with_verdict(record.verdicts, verdict)})
    if verdict.verdict == "hold":
        save(ctx, record)
        return result(record, plan, verdict.summary)
    if verdict.verdict in ("breach", "timeout"):
        record = revert(ctx, path, record, verdict)
        raise GateFailed(record.message)
    if record.step < len(plan.steps):
        return result(advance(ctx, path, record, plan), plan, verdict.summary)
    if plan.experiment is not None:
        record = decide(ctx, path, record, plan)
    elif (why := needs_a_person(ctx, verdict, plan)) is not None:
        record = await_approval(ctx, record, f"passed all {len(plan.steps)} steps, but {why}", verdict)
    else:
        record = promote(ctx, path, record, f"passed all {len(plan.steps)} steps")
    return result(record, plan, verdict.summary, promoted_now=record.state == "promoted")


def needs_a_person(ctx: StageContext, verdict: CanaryVerdict, plan: RolloutPlan) -> str | None:
    """Why a canary that passed every step is promoted only by a person: a forced deploy, or a thin margin: its
    online logloss significantly worse than stable's (the interval above 0), though within what a step allows. On a
    point estimate alone, noise would ask a person about one canary in three at these sample sizes; this asks about
    one equal canary in 40 (alpha / 2)."""
    if ctx.params.deploy == "force":
        return "the run asked deploy=force"
    logloss = next((c for c in verdict.checks if c.check == "online logloss"), None)
    if not plan.approve_thin_margin or logloss is None:
        return None
    if logloss.low is not None and logloss.low > 0 and logloss.stable:
        return (
            f"its margin is thin: online logloss {logloss.canary:.4f} against stable's {logloss.stable:.4f} "
            f"({logloss.canary / logloss.stable - 1:+.1%}, significantly worse; a step allows up to "
            f"{plan.analysis.max_logloss_increase:+.1%})"
        )
    return None


def await_approval(ctx: StageContext, record: CanaryRecord, why: str, verdict: CanaryVerdict | None) -> CanaryRecord:
    """The split stays as it is; approve_promotion asks a person, with this evidence, and promote applies it."""
    evidence = f"\n\n```\n{format_verdict(verdict)}\n```" if verdict else ""
    text = (
        f"{record.strategy} of {ctx.model.name} v{record.version} beside production v{record.stable_version}: {why}. "
        f"Promote: v{record.version} serves every user; Keep stable: v{record.stable_version} does.{evidence}"
    )
    at = stamp(now())
    event = CanaryEvent(at=at, step=record.step, weight=record.weight, event="awaiting approval", detail=why)
    record = record.model_copy(
        update={"state": "awaiting approval", "approval": text, "timeline": [*record.timeline, event]}
    )
    save(ctx, record)
    ctx.log(f"{record.strategy} of {ctx.model.name} v{record.version} awaits a person's decision: {why}")
    return record


def with_verdict(verdicts: list[CanaryVerdict], verdict: CanaryVerdict) -> list[CanaryVerdict]:
    """The step's latest verdict replaces an earlier one of the same kind: the record keeps each change of verdict."""
    last = verdicts[-1] if verdicts else None
    if last is not None and (last.step, last.verdict) == (verdict.step, verdict.verdict):
        return [*verdicts[:-1], verdict]
    return [*verdicts, verdict]


def result(record: CanaryRecord, plan: RolloutPlan, summary: str, *, promoted_now: bool = False) -> CanaryResult:
    last = record.verdicts[-1].verdict if record.verdicts else "none yet"
    return CanaryResult(
        state=record.state, version=record.version, stable_version=record.stable_version, step=record.step,
        weight=record.weight, verdict=last, summary=summary, next_check_seconds=plan.check_every_seconds,
        production_moved=promoted_now, approval=record.approval if record.state == "awaiting approval" else None,
    )  # fmt: skip


def _change(ctx: StageContext, record: CanaryRecord, event: str, **fields) -> Change:
    version = fields.pop("version")
    return Change(
        version=version, expected=record.stable_version, requested_by=requested_by(ctx, f"canary {event}", version),
        reason=fields.pop("reason"), note=f"canary {event} run {ctx.run_id or 'cli'}",
        record_uri=ctx.layout.canary_change(record.step, event), **fields,
    )  # fmt: skip


def advance(ctx: StageContext, path: ProductionPath, record: CanaryRecord, plan: RolloutPlan) -> CanaryRecord:
    number = record.step + 1
    weight = plan.steps[number - 1].weight
    golden = ctx.store.read_table(ctx.result(EvaluateResult).golden_uri)
    change = path.change(
        _change(
            ctx, record, "advanced", action="canary", version=record.version, smoke=SmokeTest.from_golden(golden),
            split=TrafficSplit(record.version, weight, record.salt), expected_canary=record.version,
            reason=f"step {record.step} passed",
        )
    )  # fmt: skip
    ctx.log(change.message)
    at = stamp(now())
    event = CanaryEvent(at=at, step=number, weight=weight, event="advanced", detail=change.message)
    record = record.model_copy(
        update={"step": number, "weight": weight, "step_started_at": at, "baseline": counts(path.urls),
                "timeline": [*record.timeline, event]}
    )  # fmt: skip
    save(ctx, record)
    return record


def promote(ctx: StageContext, path: ProductionPath, record: CanaryRecord, why: str) -> CanaryRecord:
    golden = ctx.store.read_table(ctx.result(EvaluateResult).golden_uri)
    change = path.change(
        _change(ctx, record, "promoted", action="deploy", version=record.version, smoke=SmokeTest.from_golden(golden),
                expected_canary=record.version, reason=why)
    )  # fmt: skip
    message = f"{record.strategy} of {ctx.model.name} v{record.version} {why}: promoted; {change.message}"
    return finish(ctx, record, "promoted", message)


def back_to_stable(ctx: StageContext, path: ProductionPath, record: CanaryRecord, why: str) -> None:
    """Every user back on stable, through the production path (stable's own known answers checked)."""
    stable = ctx.registry.get(ctx.model.name, record.stable_version)
    rows = golden_rows(ctx.store, ctx.model.name, (ctx.ds.isoformat(), stable.ds))
    change = path.change(
        _change(ctx, record, "reverted", action="rollback", version=record.stable_version,
                smoke=known_answers(ctx.store, ctx.model, stable, rows), reason=why)
    )  # fmt: skip
    ctx.log(change.message)


def revert(ctx: StageContext, path: ProductionPath, record: CanaryRecord, verdict: CanaryVerdict) -> CanaryRecord:
    back_to_stable(ctx, path, record, verdict.summary)
    what = "breached" if verdict.verdict == "breach" else "held too long"
    message = (
        f"{record.strategy} of {ctx.model.name} v{record.version} {what} at step {record.step} "
        f"({record.weight:.0%}): {verdict.summary}; reverted, v{record.stable_version} serves every user"
    )
    return finish(ctx, record, "reverted", message)


def keep_stable(ctx: StageContext, path: ProductionPath, record: CanaryRecord, why: str) -> CanaryRecord:
    back_to_stable(ctx, path, record, why)
    return finish(ctx, record, "kept stable", f"{why}; v{record.stable_version} serves every user")


def decide(ctx: StageContext, path: ProductionPath, record: CanaryRecord, plan: RolloutPlan) -> CanaryRecord:
    """An A/B experiment's decision by online logloss over the whole experiment, its report, and what it applies."""
    ab = plan.experiment
    data = step_data(ctx, record, path.urls, dt.datetime.fromisoformat(record.started_at))
    known = data.labelled
    comparison = compare_logloss(
        data.variant[known], data.user_id[known], data.score[known], data.outcome[known], alpha=ab.alpha,
        min_rows=ab.min_outcomes, min_positives=ab.min_positives,
    )  # fmt: skip
    decision = decide_ab(comparison, min_relative_gain=ab.min_relative_gain)
    ctx.log(f"A/B v{record.version} (canary) against v{record.stable_version} (stable): {decision.summary}")
    record = record.model_copy(update={"report": decision.summary})
    if decision.winner == CANARY and ab.apply == "auto":
        return promote(ctx, path, record, f"won the A/B experiment ({decision.verdict})")
    if decision.winner == CANARY and ab.apply == "approve":
        return await_approval(ctx, record, f"it won the A/B experiment: {decision.summary}", None)
    return keep_stable(ctx, path, record, decision.summary)


def finish(ctx: StageContext, record: CanaryRecord, state: str, message: str) -> CanaryRecord:
    at = stamp(now())
    event = CanaryEvent(at=at, step=record.step, weight=record.weight, event=state, detail=message)
    record = record.model_copy(
        update={"state": state, "finished_at": at, "message": message, "timeline": [*record.timeline, event]}
    )
    save(ctx, record)
    ctx.log(message)
    return record
