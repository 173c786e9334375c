"""promote: apply a person's decision on a canary or A/B experiment that awaits one.

The canary stage hands the decision to a person when a promotion is not for it to make (an A/B winner with
model.yaml's `apply: approve`, a canary whose margin was thin, a `deploy: force` run). Airflow asks in the UI
(approve_promotion, keiko.operators.approval, with the evidence in its body) and passes the choice and who made it
(keiko.process.APPROVAL_ENV, APPROVED_BY_ENV); this stage applies it through the production path: Promote moves
every user to the canary and the alias with them, Keep stable ends the canary.
"""

from __future__ import annotations

import os

from keiko.contract import CanaryRecord, PromoteResult
from keiko.errors import KeikoError, StageSkipped
from keiko.process import APPROVAL_ENV, APPROVAL_OPTIONS, APPROVED_BY_ENV, PROMOTE
from keiko.rollout.production import ProductionPath
from keiko.stages import canary
from keiko.stages.context import StageContext


def run(ctx: StageContext) -> PromoteResult:
    record = ctx.layout.find(ctx.layout.canary_record, CanaryRecord)
    if record is None or record.state != "awaiting approval":
        state = record.state if record else "no canary"
        raise StageSkipped(f"no decision awaited in this run ({state})")
    choice, who = os.environ.get(APPROVAL_ENV, ""), os.environ.get(APPROVED_BY_ENV) or "someone"
    if choice not in APPROVAL_OPTIONS:
        options = " or ".join(f"{APPROVAL_ENV}='{option}'" for option in APPROVAL_OPTIONS)
        raise KeikoError(
            f"{ctx.model.name} v{record.version} awaits a person's decision ({record.approval.split('. ')[0]}): "
            f"answer approve_promotion in the Airflow UI, or run this stage with {options}"
        )
    path = ProductionPath(model=ctx.model, resources=ctx.resources, log=ctx.log)
    decided = f"{who} chose {choice}"
    record = record.model_copy(update={"approval": f"{record.approval}\n\n{decided}."})
    if choice == PROMOTE:
        record = canary.promote(ctx, path, record, f"was approved ({decided})")
    else:
        record = canary.keep_stable(ctx, path, record, f"{decided}")
    return PromoteResult(
        decision=choice,
        decided_by=who,
        state=record.state,
        version=ctx.registry.alias(ctx.model.name),
        production_moved=record.state == "promoted",
    )
