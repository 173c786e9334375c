"""gate_volume: the day's answers are all there, and the model's training data and offline accuracy hold up
across runs.

- answered share: the day's population with a logged answer (model.yaml monitor.answered_share); fewer means
  the prediction log dropped rows or some traffic went past keiko's servers.
- fallback share (batch models): the answers that fell back to the prior (keys the batch lacked, or an expired
  batch) / the answers (model.yaml serving.batch.max_fallback_share);
- trend: a least-squares line through log(training rows) and log(offline test logloss) of the model's last
  monitor.trend.runs runs in the registry (one per day, any status). gate_raw's volume band compares a day with
  a trailing median, which a slow decline drags down with it: -3 % a day for ten days stays inside a +-30 %
  band of the median every day, while the line's slope is -3 % a day.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from keiko.contract import JoinOutcomesResult, VolumeGateResult
from keiko.gates.runner import Validation, report, run_validations
from keiko.registry import ModelVersion
from keiko.stages.context import StageContext


def daily_change(series: dict[str, float]) -> float | None:
    """The fitted daily relative change of a positive series keyed by day (-0.03: 3 % less a day); None for fewer
    than two points. Days missing from the series are gaps in the line, not zeros."""
    if len(series) < 2:
        return None
    days = np.array([pd.Timestamp(day).toordinal() for day in series], dtype=float)
    slope = np.polyfit(days - days.mean(), np.log(np.fromiter(series.values(), dtype=float)), 1)[0]
    return math.expm1(slope)


def last_runs(versions: list[ModelVersion], day: str, runs: int) -> list[ModelVersion]:
    """The newest version of each run day up to `day`, the last `runs` of them, oldest first."""
    by_day: dict[str, ModelVersion] = {}
    for version in sorted(versions, key=lambda v: v.version):
        if version.ds <= day and version.metrics.get("raw_rows") and version.metrics.get("test"):
            by_day[version.ds] = version
    return [by_day[d] for d in sorted(by_day)[-runs:]]


def run(ctx: StageContext) -> VolumeGateResult:
    import great_expectations.expectations as gxe

    config = ctx.model.config.monitor
    joined = ctx.result(JoinOutcomesResult)
    share = joined.answered / joined.population
    validations = [
        Validation(
            "answered",
            pd.DataFrame([{"answered_share": share}]),
            [
                gxe.ExpectColumnValuesToBeBetween(
                    column="answered_share", min_value=config.answered_share.min, max_value=config.answered_share.max
                )
            ],
        )
    ]
    batch = ctx.model.config.serving.batch
    fallback_share = None
    if batch is not None:  # a batch model: the answers its batch could not give
        fallback_share = joined.fallbacks / max(joined.answered, 1)
        validations.append(
            Validation(
                "fallback",
                pd.DataFrame([{"fallback_share": fallback_share}]),
                [gxe.ExpectColumnValuesToBeBetween(column="fallback_share", max_value=batch.max_fallback_share)],
            )
        )
    runs = last_runs(ctx.registry.list(ctx.model.name), joined.day, config.trend.runs)
    rows = {v.ds: int(v.metrics["raw_rows"]) for v in runs}
    losses = {v.ds: float(v.metrics["test"]["logloss"]) for v in runs}
    rows_change, loss_change = daily_change(rows), daily_change(losses)
    if len(runs) >= config.trend.runs:
        validations.append(
            Validation(
                "trend",
                pd.DataFrame(
                    [{"training_rows_daily_change": rows_change, "offline_logloss_daily_change": loss_change}]
                ),
                [
                    gxe.ExpectColumnValuesToBeBetween(
                        column="training_rows_daily_change", min_value=-config.trend.max_daily_rows_decline
                    ),
                    gxe.ExpectColumnValuesToBeBetween(
                        column="offline_logloss_daily_change", max_value=config.trend.max_daily_logloss_rise
                    ),
                ],
                partition=f"{runs[0].ds}..{runs[-1].ds}",
            )
        )
    else:
        ctx.log(
            f"gate_volume: {len(runs)} runs in the registry up to {joined.day} < trend.runs {config.trend.runs}: "
            "trend not judged"
        )
    outcomes = run_validations(ctx, "volume", validations)
    fallen = f", fallback share {fallback_share:.2%}" if fallback_share is not None else ""
    summary = f"answered share {share:.2%}{fallen}" + (
        f", training rows {rows_change:+.2%}/day and offline logloss {loss_change:+.2%}/day over {len(runs)} runs"
        if rows_change is not None and loss_change is not None
        else ""
    )
    return report(
        ctx,
        VolumeGateResult,
        outcomes,
        summary,
        day=joined.day,
        answered_share=share,
        fallback_share=fallback_share,
        training_rows=rows,
        offline_logloss=losses,
        rows_daily_change=rows_change,
        logloss_daily_change=loss_change,
    )
