"""gate_evaluation, the blessing: absolute thresholds and, when production exists, no regression.

The verdict is written as the blessing (keiko.contract.Blessing), bound to the exact candidate and
evaluation it judged (their sha256). `register` reads it: unblessed candidates are registered as rejected and never
deployed; a missing, stale or unreadable blessing is an error, never a pass.
"""

from __future__ import annotations

import datetime as dt

import pandas as pd

from keiko.contract import Blessing, EvaluateResult, Evaluation, EvaluationGateResult, TrainResult, parse
from keiko.gates.runner import Validation, report, run_validations
from keiko.stages.context import StageContext
from keiko.storage import sha256_bytes


def run(ctx: StageContext) -> EvaluationGateResult:
    import great_expectations.expectations as gxe

    ctx.store.delete(ctx.layout.blessing)  # never leave an earlier verdict behind
    thresholds = ctx.model.config.thresholds
    evaluated = ctx.result(EvaluateResult)
    evaluation_bytes = ctx.store.read_bytes(evaluated.evaluation_uri)
    evaluation = parse(evaluation_bytes, Evaluation, evaluated.evaluation_uri)
    candidate, production = evaluation.candidate, evaluation.production
    facts = {"auc": candidate.auc, "logloss": candidate.logloss, "calibration": candidate.calibration}
    expectations = [
        gxe.ExpectColumnValuesToBeBetween(column="auc", min_value=thresholds.min_auc),
        gxe.ExpectColumnValuesToBeBetween(column="logloss", max_value=thresholds.max_logloss),
        gxe.ExpectColumnValuesToBeBetween(
            column="calibration",
            min_value=1 - thresholds.calibration_tolerance,
            max_value=1 + thresholds.calibration_tolerance,
        ),
    ]
    # Out of time for production too, or no comparison: production trained on the days before its own test
    # day (its window's end), so on a test day before that (a backfill) it would look better than it is.
    comparable = production is not None and production.window_end <= ctx.ds.isoformat()
    if comparable:
        facts["logloss_regression"] = (candidate.logloss - production.logloss) / production.logloss
        expectations.append(
            gxe.ExpectColumnValuesToBeBetween(column="logloss_regression", max_value=thresholds.max_regression)
        )
        ctx.log(
            f"gate_evaluation {ctx.model.name}: candidate vs production v{production.version} on the same "
            f"{evaluation.test_rows:,} test rows, and absolute thresholds"
        )
    elif production:
        ctx.log(
            f"gate_evaluation {ctx.model.name}: production v{production.version} trained on days up to "
            f"{production.window_end}, after this test day {ctx.ds}, so comparing with it is not out of "
            "time: the absolute thresholds alone decide"
        )
    else:
        ctx.log(f"gate_evaluation {ctx.model.name}: no production model yet: the absolute thresholds alone decide")
    # Between-expectations skip nulls: a missing or NaN metric must fail explicitly.
    expectations += [gxe.ExpectColumnValuesToNotBeNull(column=name) for name in facts]
    outcomes = run_validations(ctx, "evaluation", [Validation("blessing", pd.DataFrame([facts]), expectations)])

    failed = [o for o in outcomes if not o.passed]
    no_comparison = "production trained on the test day" if production else "no production model"
    blessing = Blessing(
        blessed=not failed,
        reasons=[f"{o.column} {o.observed} not {o.expected}" for o in failed]
        or [f"all {len(outcomes)} checks passed" + ("" if comparable else f" ({no_comparison}: absolute only)")],
        model_sha256=ctx.result(TrainResult).model_sha256,
        evaluation_sha256=sha256_bytes(evaluation_bytes),
        production_version=production.version if comparable else None,
        metrics=facts,
        judged_at=dt.datetime.now(dt.UTC).isoformat(),
    )
    ctx.layout.write(ctx.layout.blessing, blessing)
    summary = "blessed: " + "; ".join(blessing.reasons)
    return report(ctx, EvaluationGateResult, outcomes, summary, blessed=blessing.blessed)
