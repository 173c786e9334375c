"""gate_evaluation, the blessing: absolute thresholds and, when production exists, no regression.

The verdict is written as blessing.json, bound to the exact candidate and evaluation it judged
(their sha256). `register` reads it: unblessed candidates are registered as rejected and never
deployed; a missing, stale or unreadable blessing is an error, never a pass.
"""

from __future__ import annotations

import datetime as dt
import json

import pandas as pd

from keiko.gates.runner import Validation, report, run_validations
from keiko.stages.context import StageContext
from keiko.storage import sha256_bytes

BLESSING = "blessing.json"


def run(ctx: StageContext) -> dict:
    import great_expectations.expectations as gxe

    blessing_uri = ctx.uri(BLESSING)
    ctx.store.delete(blessing_uri)  # never leave an earlier verdict behind
    thresholds = ctx.model.config.thresholds
    evaluation_bytes = ctx.store.read_bytes(ctx.uri("evaluation.json"))
    evaluation = json.loads(evaluation_bytes)
    candidate, production = evaluation["candidate"], evaluation["production"]
    facts = {
        "auc": candidate.get("auc"),
        "logloss": candidate.get("logloss"),
        "calibration": candidate.get("calibration"),
    }
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
    comparable = production and production.get("window_end", "") <= ctx.ds.isoformat()
    if comparable:
        facts["logloss_regression"] = (candidate["logloss"] - production["logloss"]) / production["logloss"]
        expectations.append(
            gxe.ExpectColumnValuesToBeBetween(column="logloss_regression", max_value=thresholds.max_regression)
        )
        ctx.log(
            f"gate_evaluation {ctx.model.name}: candidate vs production v{production['version']} on the same "
            f"{evaluation['test_rows']:,} test rows, and absolute thresholds"
        )
    elif production:
        ctx.log(
            f"gate_evaluation {ctx.model.name}: production v{production['version']} trained on days up to "
            f"{production.get('window_end')}, after this test day {ctx.ds}, so comparing with it is not out of "
            "time: the absolute thresholds alone decide"
        )
    else:
        ctx.log(f"gate_evaluation {ctx.model.name}: no production model yet: the absolute thresholds alone decide")
    # Between-expectations skip nulls: a missing or NaN metric must fail explicitly.
    expectations += [gxe.ExpectColumnValuesToNotBeNull(column=name) for name in facts]
    outcomes = run_validations(ctx, "evaluation", [Validation("blessing", pd.DataFrame([facts]), expectations)])

    failed = [o for o in outcomes if not o.passed]
    no_comparison = "production trained on the test day" if production else "no production model"
    trained = ctx.stage_result("train")
    blessing = {
        "blessed": not failed,
        "reasons": [f"{o.column} {o.observed} not {o.expected}" for o in failed]
        or [f"all {len(outcomes)} checks passed" + ("" if comparable else f" ({no_comparison}: absolute only)")],
        "model_sha256": trained["model_sha256"],
        "evaluation_sha256": sha256_bytes(evaluation_bytes),
        "production_version": production["version"] if comparable else None,
        "metrics": facts,
        "judged_at": dt.datetime.now(dt.UTC).isoformat(),
    }
    ctx.store.write_json(blessing_uri, blessing)
    summary = "blessed: " + "; ".join(blessing["reasons"])
    return report(ctx, "evaluation", outcomes, summary, {"blessed": blessing["blessed"]})
