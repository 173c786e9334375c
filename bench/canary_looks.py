"""How often a canary as good as stable is reverted, by how often its step is looked at.

A step's analysis runs every `check_every_seconds` while its outcomes arrive. Its online tests (logloss,
calibration: keiko.rollout.online_stats) have level alpha at one look; tested at every look, each look is another
chance of a false breach. keiko judges them once, at the look where the step has its sample (keiko.rollout.analysis);
this measures both ways on the same simulated steps, interleaved: equal versions (one model's scores for both),
users with heterogeneous click rates (~3%), a step of 25% asking for 1,500 canary outcomes, its rows arriving in
`looks` equal parts. Results go to the `## Canary looks` section of bench/RESULTS.md.

    .venv/bin/python bench/canary_looks.py             # ~1 minute
"""

from __future__ import annotations

import argparse
import datetime as dt
import math
from pathlib import Path

import numpy as np
from pipeline import REPO, write_section

from keiko.contract import VariantCounts
from keiko.modeldef import CanaryAnalysis, CanaryStep
from keiko.rollout.analysis import StepData, checks, judge

STEP = CanaryStep(weight=0.25, min_requests=1, min_outcomes=1500)
ONLINE = ("online logloss", "calibration")


def equal_step(rng: np.random.Generator) -> StepData:
    """A step's rows, enough for STEP's 1,500 canary outcomes at its last look; both variants scored alike."""
    users = 3000
    on_canary = rng.random(users) < STEP.weight
    rows = 7200
    user_id = rng.integers(0, users, rows)
    truth = rng.beta(1, 30, users)[user_id]
    score = np.clip(truth * np.exp(rng.normal(0, 0.3, rows)), 1e-6, 0.999)
    return StepData(
        counts={},
        variant=np.where(on_canary[user_id], "canary", "stable"),
        score=score,
        labelled=np.ones(rows, dtype=bool),
        user_id=user_id,
        outcome=(rng.random(rows) < truth).astype(int),
    )


def breached(full: StepData, looks: int, analysis: CanaryAnalysis) -> tuple[bool, bool]:
    """(keiko's step breached, the step breached had its online tests been tested at every look): each step ends at
    its first pass or breach, as a canary's does."""
    keiko = every_look = None
    for look in range(1, looks + 1):
        n = len(full.variant) * look // looks
        answered = VariantCounts(requests=n, latency_buckets={"0.005": n, "+Inf": n})  # every check has its sample
        part = StepData(
            counts={"stable": answered, "canary": answered},
            variant=full.variant[:n], score=full.score[:n], labelled=full.labelled[:n], user_id=full.user_id[:n],
            outcome=full.outcome[:n],
        )  # fmt: skip
        verdict = judge(part, STEP, analysis, number=1, held_minutes=1, max_hold_minutes=60, at="").verdict
        tested = checks(part, STEP, analysis, judge_online=True)
        online_breach = any(c.verdict == "breach" for c in tested if c.check in ONLINE)
        if every_look is None and (online_breach or verdict != "hold"):
            every_look = online_breach or verdict == "breach"
        if keiko is None and verdict != "hold":
            keiko = verdict == "breach"
        if keiko is not None and every_look is not None:
            break
    return bool(keiko), bool(every_look)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=600, help="simulated equal steps per look count")
    parser.add_argument("--looks", type=int, nargs="+", default=[1, 5, 20])
    parser.add_argument("--results", type=Path, default=REPO / "bench" / "RESULTS.md")
    parser.add_argument("--no-write", action="store_true", help="print only; leave RESULTS.md alone")
    args = parser.parse_args()

    analysis = CanaryAnalysis()
    rng = np.random.default_rng(2026)
    steps = [equal_step(rng) for _ in range(args.steps)]
    rows = ["| looks a step | breached: keiko (judged once) | breached: tested at every look |", "|---:|---:|---:|"]
    for looks in args.looks:
        found = np.array([breached(step, looks, analysis) for step in steps])
        rates = found.mean(axis=0)
        half = [1.96 * math.sqrt(r * (1 - r) / len(steps)) for r in rates]
        rows.append(f"| {looks} | {rates[0]:.1%} ± {half[0]:.1%} | {rates[1]:.1%} ± {half[1]:.1%} |")
        print(rows[-1], flush=True)
    section = "\n".join([
        "## Canary looks",
        "",
        f"`.venv/bin/python bench/canary_looks.py --steps {args.steps}` ({dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC)."
        f" {args.steps:,} simulated steps of a canary as good as stable (25%, 1,500 canary outcomes, default analysis:"
        f" alpha {analysis.alpha}), each looked at as its rows arrive in equal parts; a breach of either online test"
        " (logloss, calibration) reverts. ± is the 95% interval of the share.",
        "",
        *rows,
    ])  # fmt: skip
    print(section)
    if not args.no_write:
        write_section(args.results, "canary looks", section)


if __name__ == "__main__":
    main()
