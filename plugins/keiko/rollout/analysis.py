"""A canary step's analysis: canary against stable on the same period, from what the servers counted and logged.

Pure functions (keiko.stages.canary does the reading). Each check either has the sample it needs or says
"not enough data": too little evidence holds a step, it never reverts one (Argo Rollouts reverts a canary that
simply had no data yet: its issue #1905). A breach needs the evidence: online logloss and calibration are
judged by keiko.rollout.online_stats' user-clustered tests, not on a point estimate alone, and once a step: at the
look where the step has its sample (hold, requests, outcomes). Tested at every look, each look is another chance of
a false breach: over 20 looks, 6.7% of equal canaries' steps breach against 3.0% judged once (bench/canary_looks.py).
The other checks are bounds on what the servers counted, not tests, and are read at every look.

| check          | from                                         | breach when                                       |
|----------------|----------------------------------------------|---------------------------------------------------|
| error rate     | /metrics: 5xx answers of each variant        | canary's share - stable's > max_error_rate_increase |
| p95 latency    | /metrics: each variant's latency histogram   | canary's p95 / stable's > max_p95_latency_ratio   |
| predictions    | the prediction log: every answer of the step | KL(canary, stable; stable's deciles) > max        |
| online logloss | the log joined with outcomes (monitor.sql)   | worse by > max_logloss_increase, interval above 0 |
| calibration    | the same rows                                | further from 1 than stable's by > tolerance, ditto |
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from keiko.contract import CanaryCheck, CanaryVerdict, VariantCounts
from keiko.gates.divergence import SMOOTHING
from keiko.modeldef import CanaryAnalysis, CanaryStep
from keiko.rollout.online_stats import Comparison, compare_calibration, compare_logloss
from keiko.serving.split import CANARY, STABLE, VARIANTS

# An A/B experiment is decided by online logloss, not reverted for it: only these checks guard it (the others are shown,
# a breach of theirs as "differs").
EXPERIMENT_GUARDS = ("error rate (5xx)", "p95 latency (s)")
PREDICTION_BINS = 10  # stable's deciles: KL noise at 1,000 rows a variant ~ 10 / (2 * 1,000) = 0.005
MIN_PREDICTIONS = 1000  # answers per variant before their distributions are compared
MIN_LATENCY_REQUESTS = 100  # requests per variant before a p95 means anything


@dataclass(frozen=True)
class StepData:
    """What a step saw: the servers' counts since it started, and the logged answers of the period."""

    counts: Mapping[str, VariantCounts]  # variant -> requests, 5xx, latency buckets in the step
    variant: np.ndarray  # every answer logged in the step
    score: np.ndarray
    labelled: np.ndarray  # bool: the answer's outcome is known (its outcome partitions have landed)
    user_id: np.ndarray
    outcome: np.ndarray  # 0/1 where labelled

    def served(self, variant: str) -> int:
        return int(np.sum(self.variant == variant))


def delta(now: VariantCounts, then: VariantCounts | None) -> VariantCounts:
    """Counts in the step: now minus when it started (a replica restarted meanwhile counts from zero)."""
    if then is None or now.requests < then.requests:
        return now
    buckets = {b: n - then.latency_buckets.get(b, 0) for b, n in now.latency_buckets.items()}
    return VariantCounts(
        requests=now.requests - then.requests, errors=now.errors - then.errors, latency_buckets=buckets
    )


def quantile(buckets: Mapping[str, int], q: float) -> float | None:
    """The q-quantile of a cumulative histogram, interpolated within its bucket as Prometheus'
    histogram_quantile does; None without observations."""
    bounds = sorted(((float(b), n) for b, n in buckets.items()), key=lambda item: item[0])
    total = bounds[-1][1] if bounds else 0
    if total <= 0:
        return None
    rank, lower, below = q * total, 0.0, 0
    for upper, cumulative in bounds:
        if cumulative >= rank:
            if math.isinf(upper):
                return lower  # beyond the last finite bucket: its bound is all that is known
            inside = cumulative - below
            return lower + (upper - lower) * ((rank - below) / inside if inside else 1.0)
        lower, below = upper, cumulative
    return lower


def prediction_kl(canary: np.ndarray, stable: np.ndarray) -> float:
    """KL(canary || stable) over stable's deciles, stable's weights floored as the drift gates floor them."""
    edges = np.quantile(stable, np.linspace(0, 1, PREDICTION_BINS + 1)[1:-1])
    p = np.bincount(np.searchsorted(edges, canary, side="right"), minlength=PREDICTION_BINS) / len(canary)
    q = np.bincount(np.searchsorted(edges, stable, side="right"), minlength=PREDICTION_BINS) / len(stable)
    q = np.maximum(q, SMOOTHING)
    q /= q.sum()
    inside = p > 0
    return float(np.sum(p[inside] * np.log(p[inside] / q[inside])))


def _check(check: str, stable, canary, allowed: str, enough: bool, breached: bool, detail: str = "") -> CanaryCheck:
    verdict = "not enough data" if not enough else ("breach" if breached else "pass")
    return CanaryCheck(check=check, stable=stable, canary=canary, allowed=allowed, verdict=verdict, detail=detail)


def _compared(check: str, comparison: Comparison, margin: float, allowed: str, judged: bool) -> CanaryCheck:
    interval = (
        f"canary - stable {comparison.difference:+.4g}, {1 - comparison.alpha:.0%} CI {comparison.low:+.4g}.."
        f"{comparison.high:+.4g}"
        if comparison.enough
        else f"needs {f'{comparison.min_rows:,} rows and ' if comparison.min_rows else ''}"
        f"{comparison.min_positives} positives a variant"
    )
    if comparison.enough and not judged:
        interval += "; judged once the step has its sample"
    enough = comparison.enough and judged
    found = _check(check, comparison.stable, comparison.canary, allowed, enough, comparison.worse(margin), interval)
    return found.model_copy(update={"low": comparison.low, "high": comparison.high})


def checks(data: StepData, step: CanaryStep, analysis: CanaryAnalysis, *, judge_online: bool) -> list[CanaryCheck]:
    """Every check of the step; the online tests' verdicts only when `judge_online` (the step has its sample)."""
    stable, canary = data.counts.get(STABLE, VariantCounts()), data.counts.get(CANARY, VariantCounts())
    need_requests = max(step.min_requests, 1)
    rate = {v: c.errors / c.requests if c.requests else None for v, c in ((STABLE, stable), (CANARY, canary))}
    enough = stable.requests >= need_requests and canary.requests >= need_requests
    found = [
        _check(
            "error rate (5xx)",
            rate[STABLE],
            rate[CANARY],
            f"canary <= stable + {analysis.max_error_rate_increase:g}",
            enough,
            enough and rate[CANARY] - rate[STABLE] > analysis.max_error_rate_increase,
            f"{canary.errors:,} of {canary.requests:,} canary, {stable.errors:,} of {stable.requests:,} stable",
        )
    ]
    p95 = {STABLE: quantile(stable.latency_buckets, 0.95), CANARY: quantile(canary.latency_buckets, 0.95)}
    enough = (
        min(stable.requests, canary.requests) >= max(need_requests, MIN_LATENCY_REQUESTS) and None not in p95.values()
    )
    found.append(
        _check(
            "p95 latency (s)",
            p95[STABLE],
            p95[CANARY],
            f"canary <= {analysis.max_p95_latency_ratio:g} x stable",
            enough,
            enough and p95[CANARY] > analysis.max_p95_latency_ratio * p95[STABLE],
        )
    )
    scores = {v: data.score[data.variant == v] for v in VARIANTS}
    enough = min(len(s) for s in scores.values()) >= MIN_PREDICTIONS
    kl = prediction_kl(scores[CANARY], scores[STABLE]) if enough else None
    found.append(
        _check(
            "predictions KL",
            0.0 if enough else None,
            kl,
            f"<= {analysis.max_prediction_kl:g}",
            enough,
            enough and kl > analysis.max_prediction_kl,
            f"{len(scores[CANARY]):,} canary, {len(scores[STABLE]):,} stable answers",
        )
    )
    known = data.labelled
    labelled = (data.variant[known], data.user_id[known], data.score[known], data.outcome[known])
    found.append(
        _compared(
            "online logloss",
            compare_logloss(
                *labelled,
                alpha=analysis.alpha,
                min_rows=max(step.min_outcomes, 1),
                min_positives=analysis.min_positives,
            ),
            analysis.max_logloss_increase,
            f"canary <= stable x {1 + analysis.max_logloss_increase:g}",
            judge_online,
        )
    )
    found.append(
        _compared(
            "calibration",
            compare_calibration(*labelled, alpha=analysis.alpha, min_positives=analysis.min_positives),
            analysis.calibration_tolerance,
            f"canary not further from 1, or within stable x (1 +- {analysis.calibration_tolerance:g})",
            judge_online,
        )
    )
    return found


def judge(
    data: StepData,
    step: CanaryStep,
    analysis: CanaryAnalysis,
    *,
    number: int,
    held_minutes: float,
    max_hold_minutes: float,
    at: str,
    experiment: bool = False,
) -> CanaryVerdict:
    """The step's verdict: breach on any breached check (an experiment's: on a guard's); pass once every check has its
    sample and the step its hold (time, canary requests, canary outcomes); timeout when it still has not after
    max_hold_minutes; else hold."""
    requests = {v: data.counts.get(v, VariantCounts()).requests for v in VARIANTS}
    outcomes = {v: int(np.sum(data.labelled & (data.variant == v))) for v in VARIANTS}
    positives = {v: int(np.sum(data.outcome[data.labelled & (data.variant == v)])) for v in VARIANTS}
    held = []  # what the step itself still lacks
    if held_minutes < step.hold_minutes:
        held.append(f"held {held_minutes:.1f} of {step.hold_minutes:g} min")
    if requests[CANARY] < step.min_requests:
        held.append(f"{requests[CANARY]:,} of {step.min_requests:,} canary requests")
    if outcomes[CANARY] < step.min_outcomes:
        held.append(f"{outcomes[CANARY]:,} of {step.min_outcomes:,} canary outcomes")
    found = checks(data, step, analysis, judge_online=not held)
    if experiment:
        found = [
            c.model_copy(update={"verdict": "differs"}) if c.verdict == "breach" and c.check not in EXPERIMENT_GUARDS
            else c
            for c in found
        ]  # fmt: skip
    breached = [c.check for c in found if c.verdict == "breach"]
    short = [c.check for c in found if c.verdict == "not enough data"] + held
    if breached:
        verdict, summary = "breach", f"breach: {', '.join(breached)}"
    elif not short:
        verdict, summary = "pass", "every check passed with its sample"
    elif held_minutes >= max_hold_minutes:
        verdict, summary = "timeout", f"not enough data after {held_minutes:.0f} min: {', '.join(short)}"
    else:
        verdict, summary = "hold", f"holding: {', '.join(short)}"
    return CanaryVerdict(
        at=at,
        step=number,
        weight=step.weight,
        held_minutes=round(held_minutes, 2),
        verdict=verdict,
        requests=requests,
        outcomes=outcomes,
        positives=positives,
        checks=found,
        summary=summary,
    )


def format_verdict(verdict: CanaryVerdict) -> str:
    """The verdict as a table in the task log, in the gates' shape: what was checked, observed, allowed."""
    rows = [("check", "stable", "canary", "allowed", "verdict", "detail")]
    for c in verdict.checks:
        rows.append((c.check, _number(c.stable), _number(c.canary), c.allowed, c.verdict, c.detail))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip() for row in rows]
    head = (
        f"step {verdict.step} ({verdict.weight:.0%} canary), held {verdict.held_minutes:g} min: "
        f"requests {verdict.requests[CANARY]:,} canary / {verdict.requests[STABLE]:,} stable, outcomes "
        f"{verdict.outcomes[CANARY]:,} / {verdict.outcomes[STABLE]:,} ({verdict.positives[CANARY]:,} / "
        f"{verdict.positives[STABLE]:,} positive)"
    )
    return "\n".join([head, *lines, f"verdict: {verdict.verdict.upper()}: {verdict.summary}"])


def _number(value: float | None) -> str:
    return "-" if value is None else f"{value:.4g}"
