"""A canary step's analysis: canary against stable from synthetic counts and logged answers whose truth is known."""

from __future__ import annotations

import numpy as np
import pytest

from keiko.contract import VariantCounts
from keiko.modeldef import CanaryAnalysis, CanaryStep
from keiko.rollout.analysis import StepData, delta, format_verdict, judge, prediction_kl, quantile

ANALYSIS = CanaryAnalysis()
STEP = CanaryStep(weight=0.5, hold_minutes=5, min_requests=1000, min_outcomes=1000)
MAX_HOLD_MINUTES = 60
CHECKS = ("error rate (5xx)", "p95 latency (s)", "predictions KL", "online logloss", "calibration")


# -- quantile, delta, prediction_kl ---------------------------------------------------------------------------


def test_quantile_interpolates_within_its_bucket_as_prometheus_does():
    # 100 requests: 50 up to 10 ms, 40 more up to 20 ms, 10 more up to 50 ms, none beyond.
    buckets = {"0.01": 50, "0.02": 90, "0.05": 100, "+Inf": 100}
    assert quantile(buckets, 0.5) == pytest.approx(0.01)
    assert quantile(buckets, 0.25) == pytest.approx(0.005)  # the first bucket starts at 0
    assert quantile(buckets, 0.7) == pytest.approx(0.015)  # rank 70: half way through 0.01..0.02
    assert quantile(buckets, 0.95) == pytest.approx(0.035)  # rank 95: half way through 0.02..0.05
    shuffled = dict(reversed(list(buckets.items())))  # the order of the buckets does not matter
    assert quantile(shuffled, 0.95) == pytest.approx(0.035)


def test_quantile_is_none_without_observations():
    assert quantile({}, 0.95) is None
    assert quantile({"0.01": 0, "+Inf": 0}, 0.95) is None


def test_a_quantile_beyond_the_last_finite_bucket_is_that_bucket_bound():
    buckets = {"0.01": 10, "0.1": 20, "+Inf": 100}  # 80 of 100 slower than 100 ms
    assert quantile(buckets, 0.95) == pytest.approx(0.1)
    assert quantile(buckets, 0.1) == pytest.approx(0.01)


def counts(requests: int, errors: int = 0, fast: float = 0.95) -> VariantCounts:
    """`requests` of which `errors` 5xx; `fast` of them within 5 ms, all within 10 ms."""
    buckets = {"0.005": round(requests * fast), "0.01": requests, "+Inf": requests}
    return VariantCounts(requests=requests, errors=errors, latency_buckets=buckets)


def test_delta_is_what_was_counted_since_the_step_started():
    then = VariantCounts(requests=100, errors=2, latency_buckets={"0.005": 90, "0.01": 100, "+Inf": 100})
    now = VariantCounts(requests=250, errors=5, latency_buckets={"0.005": 200, "0.01": 240, "+Inf": 250})
    assert delta(now, then) == VariantCounts(
        requests=150, errors=3, latency_buckets={"0.005": 110, "0.01": 140, "+Inf": 150}
    )
    assert delta(now, None) == now  # no baseline: everything counted so far


def test_delta_counts_from_zero_after_a_counter_reset():
    then = counts(5000, errors=10)
    restarted = counts(300, errors=1)  # the replica restarted: its counters began again
    assert delta(restarted, then) == restarted


def test_predictions_kl_is_near_zero_for_the_same_distribution_and_large_for_a_shifted_one():
    rng = np.random.default_rng(1)
    stable = rng.beta(2, 20, 5000)
    assert prediction_kl(rng.beta(2, 20, 5000), stable) < 0.01
    assert prediction_kl(stable, stable) == pytest.approx(0.0, abs=1e-12)
    assert prediction_kl(np.minimum(stable * 3, 0.99), stable) > 0.5


# -- judge -----------------------------------------------------------------------------------------------------


def step_data(
    *,
    rows_per_variant: int = 4000,
    canary_truth: float = 1.0,
    labelled_canary: int | None = None,
    stable: VariantCounts | None = None,
    canary: VariantCounts | None = None,
    seed: int = 7,
) -> StepData:
    """A step's answers: users with two rows each, a user on one variant. Both variants score alike (same score
    distribution); a canary row's outcome is drawn with probability `canary_truth` x its score (0.5: its scores
    are twice the truth). Every outcome is known, but only the first `labelled_canary` of the canary's rows."""
    rng = np.random.default_rng(seed)
    n = 2 * rows_per_variant
    user_id = np.arange(n) // 2
    variant = np.where(user_id % 2 == 1, "canary", "stable")
    score = rng.uniform(0.02, 0.3, n)
    truth = np.where(variant == "canary", score * canary_truth, score)
    outcome = (rng.random(n) < truth).astype(int)
    labelled = np.ones(n, dtype=bool)
    if labelled_canary is not None:
        canary_rows = np.flatnonzero(variant == "canary")
        labelled[canary_rows[labelled_canary:]] = False
    default = counts(rows_per_variant)
    return StepData(
        counts={"stable": stable or default, "canary": canary or default},
        variant=variant,
        score=score,
        labelled=labelled,
        user_id=user_id,
        outcome=outcome,
    )


def judged(data: StepData, held_minutes: float = 10, step: CanaryStep = STEP):
    return judge(
        data,
        step,
        ANALYSIS,
        number=1,
        held_minutes=held_minutes,
        max_hold_minutes=MAX_HOLD_MINUTES,
        at="2026-11-22T10:00:00+00:00",
    )


def by_check(verdict) -> dict[str, str]:
    return {c.check: c.verdict for c in verdict.checks}


def test_a_canary_of_the_same_model_passes_with_enough_data():
    verdict = judged(step_data())
    assert verdict.verdict == "pass", format_verdict(verdict)
    assert by_check(verdict) == dict.fromkeys(CHECKS, "pass")
    assert verdict.summary == "every check passed with its sample"
    assert verdict.requests == {"stable": 4000, "canary": 4000}
    assert verdict.outcomes == {"stable": 4000, "canary": 4000}
    assert verdict.positives["canary"] > 300 and verdict.positives["stable"] > 300


def test_too_little_data_holds_and_says_what_is_short():
    data = step_data(rows_per_variant=100, stable=counts(100), canary=counts(60))
    verdict = judged(data, held_minutes=1)
    assert verdict.verdict == "hold"
    assert set(by_check(verdict).values()) == {"not enough data"}
    for short in (*CHECKS, "held 1.0 of 5 min", "60 of 1,000 canary requests", "100 of 1,000 canary outcomes"):
        assert short in verdict.summary, short
    assert verdict.summary.startswith("holding: ")


def test_too_little_data_after_max_hold_minutes_is_a_timeout():
    data = step_data(rows_per_variant=100, stable=counts(100), canary=counts(60))
    verdict = judged(data, held_minutes=MAX_HOLD_MINUTES)
    assert verdict.verdict == "timeout"
    assert verdict.summary.startswith("not enough data after 60 min: ")
    assert "60 of 1,000 canary requests" in verdict.summary


def test_a_canary_whose_scores_are_twice_the_truth_is_a_breach_once_outcomes_show_it():
    verdict = judged(step_data(canary_truth=0.5))
    assert verdict.verdict == "breach", format_verdict(verdict)
    checks = by_check(verdict)
    assert checks["calibration"] == "breach"
    assert checks["predictions KL"] == "pass"  # it scores like stable: only the outcomes tell
    assert "calibration" in verdict.summary and verdict.summary.startswith("breach: ")
    calibration = next(c for c in verdict.checks if c.check == "calibration")
    assert calibration.canary == pytest.approx(2.0, rel=0.15) and calibration.stable == pytest.approx(1.0, rel=0.1)


def test_a_bad_canary_with_too_few_outcomes_holds_and_is_not_reverted():
    verdict = judged(step_data(canary_truth=0.5, labelled_canary=150))
    assert verdict.verdict == "hold", format_verdict(verdict)
    checks = by_check(verdict)
    assert checks["calibration"] == "not enough data" and checks["online logloss"] == "not enough data"
    assert "breach" not in checks.values()
    assert "150 of 1,000 canary outcomes" in verdict.summary


def test_a_canary_answering_5xx_above_the_allowance_is_a_breach():
    verdict = judged(step_data(canary=counts(4000, errors=40)))  # 1% against stable's 0%, 0.1% allowed
    assert verdict.verdict == "breach"
    assert by_check(verdict)["error rate (5xx)"] == "breach"
    assert verdict.summary == "breach: error rate (5xx)"
    error_rate = verdict.checks[0]
    assert (error_rate.stable, error_rate.canary) == (0.0, 0.01)
    assert "40 of 4,000 canary" in error_rate.detail


def test_a_canary_errors_within_the_allowance_pass():
    verdict = judged(step_data(canary=counts(4000, errors=2)))  # 0.05%
    assert by_check(verdict)["error rate (5xx)"] == "pass"
    assert verdict.verdict == "pass"


def test_a_canary_more_than_twice_as_slow_at_p95_is_a_breach():
    slow = VariantCounts(requests=4000, latency_buckets={"0.005": 1000, "0.01": 2000, "0.05": 4000, "+Inf": 4000})
    verdict = judged(step_data(canary=slow))
    assert by_check(verdict)["p95 latency (s)"] == "breach"
    assert verdict.verdict == "breach"


def test_the_verdict_reads_as_a_table():
    hold = format_verdict(judged(step_data(rows_per_variant=100, stable=counts(100), canary=counts(60)), 1))
    lines = hold.splitlines()
    assert lines[0].startswith("step 1 (50% canary), held 1 min: requests 60 canary / 100 stable")
    assert lines[1].split() == ["check", "stable", "canary", "allowed", "verdict", "detail"]
    for check in CHECKS:
        assert any(line.startswith(check) for line in lines[2:]), check
    assert lines[-1].startswith("verdict: HOLD: holding: ")

    breach = format_verdict(judged(step_data(canary=counts(4000, errors=40))))
    assert breach.splitlines()[-1] == "verdict: BREACH: breach: error rate (5xx)"
    assert "breach" in next(line for line in breach.splitlines() if line.startswith("error rate (5xx)"))


def test_a_bad_canary_is_judged_online_only_once_the_step_has_its_sample():
    # 800 of the 1,000 canary outcomes the step asks: calibration has its positives and is plainly off, yet a test
    # at every look would revert equal canaries far more often than alpha says; it waits for the step's sample.
    verdict = judged(step_data(canary_truth=0.5, labelled_canary=800))
    assert verdict.verdict == "hold", format_verdict(verdict)
    calibration = next(c for c in verdict.checks if c.check == "calibration")
    assert calibration.verdict == "not enough data" and calibration.canary > 1.5
    assert calibration.detail.endswith("judged once the step has its sample")
    assert "800 of 1,000 canary outcomes" in verdict.summary
    assert judged(step_data(canary_truth=0.5)).verdict == "breach"  # with its sample: reverted


def test_looking_often_reverts_no_more_equal_canaries_than_looking_once():
    # Equal versions, a step judged at 8 looks as its outcomes arrive: the steps breached at any look are exactly
    # those breached at the look with the step's sample (alpha's share), not more for looking often.
    step = STEP.model_copy(update={"min_requests": 1, "min_outcomes": 1200})  # its sample at the last look
    any_look, at_sample = set(), set()
    for seed in range(60):
        full = step_data(rows_per_variant=1200, seed=seed)
        rows = len(full.variant)
        for look in range(1, 9):
            n = rows * look // 8
            data = StepData(
                counts={v: counts(n // 2) for v in ("stable", "canary")},
                variant=full.variant[:n],
                score=full.score[:n],
                labelled=full.labelled[:n],
                user_id=full.user_id[:n],
                outcome=full.outcome[:n],
            )
            if judged(data, step=step).verdict == "breach":
                any_look.add(seed)
                at_sample.update({seed} if look == 8 else set())
    assert any_look == at_sample, (sorted(any_look), sorted(at_sample))
