"""How close runs came to each gate threshold: the evidence gate thresholds are chosen from.

Reads the gate results of a model's runs and gives, per numeric check, the smallest and largest value
observed next to the allowed range.
"""

from __future__ import annotations

from collections import defaultdict

from keiko.contract import EvaluationGateResult, FeaturesGateResult, RawGateResult, TrainingGateResult
from keiko.pipeline import STEPS
from keiko.stages.context import StageContext

JUDGED_OFFLINE = (RawGateResult, FeaturesGateResult, TrainingGateResult, EvaluationGateResult)


def observed_ranges(contexts: list[StageContext]) -> list[dict]:
    values: dict[tuple[str, str], list[float]] = defaultdict(list)
    expected: dict[tuple[str, str], str] = {}
    for ctx in contexts:
        for kind in JUDGED_OFFLINE:
            gate = STEPS[kind.TASK].name
            if (result := ctx.layout.find(ctx.layout.step_result(kind.TASK), kind)) is None:
                continue
            for outcome in result.outcomes:
                if outcome.value is not None and outcome.expectation != "expect_column_values_to_not_be_null":
                    suite = outcome.suite.partition(" ")[0]  # one row per suite, over its partitions too
                    key = (f"{gate}.{suite}", outcome.column)
                    values[key].append(outcome.value)
                    expected[key] = outcome.expected
            if isinstance(result, RawGateResult) and result.volume_reference:
                raw = ctx.model.config.gates.raw
                volume, rate = ("raw.daily", "rows / median"), ("raw.daily", "label_rate")
                values[volume] += [n / result.volume_reference for n in result.daily_rows.values()]
                values[rate] += list(result.daily_label_rate.values())
                expected[volume] = f"[{raw.volume.min}, {raw.volume.max}]"
                expected[rate] = f"[{raw.label_rate.min}, {raw.label_rate.max}]"
    return [
        {
            "check": check,
            "column": column,
            "n": len(v),
            "min": min(v),
            "max": max(v),
            "allowed": expected[check, column],
        }
        for (check, column), v in sorted(values.items())
    ]


def format_ranges(rows: list[dict]) -> str:
    lines = [f"{'check':<32} {'column':<26} {'n':>4} {'min observed':>13} {'max observed':>13}  allowed"]
    lines += [
        f"{r['check']:<32} {r['column']:<26} {r['n']:>4} {r['min']:>13.6g} {r['max']:>13.6g}  {r['allowed']}"
        for r in rows
    ]
    return "\n".join(lines)
