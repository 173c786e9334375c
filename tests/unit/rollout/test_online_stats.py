"""Comparing a canary with stable on live traffic: simulated worlds where the truth is known, so a verdict can be
checked against it, including how often "better" is claimed when neither variant is."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest
from scipy.stats import norm

from keiko.rollout.online_stats import (
    calibration_interval,
    compare_calibration,
    compare_logloss,
    decide_ab,
    format_comparisons,
)

MAX_USERS = 20_000


def _sticky_variants(n_users: int, salt: str = "ctr-v7-canary") -> np.ndarray:
    """Variant per user id, from a salted hash: every row of a user lands in the same group, as in serving."""
    first_bytes = [hashlib.blake2b(f"{salt}:{u}".encode(), digest_size=8).digest()[0] for u in range(n_users)]
    return np.where(np.array(first_bytes) < 128, "canary", "stable")


VARIANT_OF_USER = _sticky_variants(MAX_USERS)


def _world(rng, n_users: int, rows_per_user: tuple[int, int] = (1, 10), user_spread: float = 0.0):
    """Served rows: (variant, user_id, true click probability, outcome). True p is lognormal around 0.03; with
    user_spread > 0 each user also has their own multiplier on it that no model knows (users differ)."""
    rows = rng.integers(rows_per_user[0], rows_per_user[1] + 1, n_users)
    user_id = np.repeat(np.arange(n_users), rows)
    truth = np.minimum(rng.lognormal(np.log(0.03) - 0.7**2 / 2, 0.7, len(user_id)), 0.5)
    user_multiplier = rng.lognormal(-(user_spread**2) / 2, user_spread, n_users)[user_id]
    outcome = (rng.random(len(user_id)) < np.minimum(truth * user_multiplier, 0.99)).astype(int)
    return VARIANT_OF_USER[user_id], user_id, truth, outcome


@pytest.fixture(scope="module")
def big_world():
    return _world(np.random.default_rng(20261121), MAX_USERS)  # ~110k rows, ~3.3k clicks


def test_a_canary_that_over_predicts_threefold_loses_on_logloss_and_stable_wins(big_world):
    variant, user_id, truth, outcome = big_world
    score = np.where(variant == "canary", np.minimum(truth * 3, 1 - 1e-6), truth)

    logloss = compare_logloss(variant, user_id, score, outcome)
    decision = decide_ab(logloss)

    assert logloss.enough and logloss.worse(0.005)
    assert logloss.canary > logloss.stable and logloss.low > 0 and logloss.p_value < 0.001
    assert (decision.verdict, decision.winner) == ("stable better", "stable")
    assert 0 < decision.low_relative < decision.relative < decision.high_relative
    assert decision.summary.startswith("stable better: online logloss canary 0.")
    assert "95% CI" in decision.summary and "Welch z-test, user-clustered" in decision.summary
    assert f"{logloss.canary_rows:,} canary and {logloss.stable_rows:,} stable rows with outcomes" in decision.summary


def test_a_canary_that_is_the_better_model_wins(big_world):
    variant, user_id, truth, outcome = big_world
    blurred = np.minimum(truth * np.random.default_rng(3).lognormal(-0.5, 1.0, len(truth)), 1 - 1e-6)
    score = np.where(variant == "canary", truth, blurred)  # stable lost resolution, the canary knows the truth

    decision = decide_ab(compare_logloss(variant, user_id, score, outcome))

    assert (decision.verdict, decision.winner) == ("canary better", "canary")
    assert decision.high_relative < 0
    assert decide_ab(compare_logloss(variant, user_id, score, outcome), min_relative_gain=0.5).verdict == (
        "no difference"
    ), "a gain smaller than asked for is no difference"


def test_calibration_shows_a_canary_over_predicting_by_40_percent(big_world):
    # A 1.4x over-prediction costs only ~1.5% logloss: invisible in logloss at this size (its interval is about
    # +-5%), plain in calibration. Both are needed.
    variant, user_id, truth, outcome = big_world
    score = np.where(variant == "canary", np.minimum(truth * 1.4, 1 - 1e-6), truth)

    calibration = compare_calibration(variant, user_id, score, outcome)

    assert calibration.stable == pytest.approx(1.0, abs=0.06)
    assert calibration.canary == pytest.approx(1.4, abs=0.08)
    assert calibration.low > 0 and calibration.p_value < 0.001
    assert calibration.worse(0.1)
    stable_rows, canary_rows = variant == "stable", variant == "canary"
    _, low, high = calibration_interval(score[stable_rows], outcome[stable_rows], user_id[stable_rows])
    assert low < 1.0 < high, "stable scores the truth: its own interval contains 1.0"
    ratio, low, high = calibration_interval(score[canary_rows], outcome[canary_rows], user_id[canary_rows])
    assert 1.0 < low < ratio < high


def test_equal_models_are_rarely_called_different():
    """Both variants score the truth: over 200 experiments "better" should be claimed ~5% of the time (alpha)."""
    rng = np.random.default_rng(11)
    claimed_better = 0
    for _ in range(200):
        variant, user_id, truth, outcome = _world(rng, 3_000)  # ~16k rows, ~500 clicks
        claimed_better += decide_ab(compare_logloss(variant, user_id, truth, outcome)).winner is not None
    assert 2 <= claimed_better <= 20, f"{claimed_better}/200 false 'better' (expected ~10)"


def _naive_p_value(variant, score, outcome) -> float:
    """What a row-independent Welch test says: the mistake the clustered one exists to avoid."""
    p = np.clip(score, 1e-15, 1 - 1e-15)
    logloss = -(outcome * np.log(p) + (1 - outcome) * np.log1p(-p))
    stable, canary = logloss[variant == "stable"], logloss[variant == "canary"]
    se = np.sqrt(stable.var(ddof=1) / len(stable) + canary.var(ddof=1) / len(canary))
    return float(2 * norm.sf(abs(canary.mean() - stable.mean()) / se))


def test_user_clustering_keeps_false_positives_near_alpha_where_a_row_level_test_does_not():
    """Heavy users (30..80 rows each) whose click rates differ: their rows are correlated, so treating rows as
    independent understates the variance. Same model on both sides: every rejection is a false positive."""
    rng = np.random.default_rng(5)
    clustered = naive = 0
    runs = 200
    for _ in range(runs):
        variant, user_id, truth, outcome = _world(rng, 800, rows_per_user=(30, 80), user_spread=1.2)
        clustered += compare_logloss(variant, user_id, truth, outcome).p_value < 0.05
        naive += _naive_p_value(variant, truth, outcome) < 0.05
    assert clustered / runs <= 0.12
    assert naive / runs >= 0.25 and naive > 2 * clustered


@pytest.mark.parametrize(
    ("users", "min_rows", "min_positives"),
    [(50, 1000, 30), (3_000, 1000, 10_000)],
    ids=["too few rows", "too few positives"],
)
def test_too_little_data_gives_no_verdict_and_no_interval(users, min_rows, min_positives):
    variant, user_id, truth, outcome = _world(np.random.default_rng(1), users)

    logloss = compare_logloss(variant, user_id, truth, outcome, min_rows=min_rows, min_positives=min_positives)
    decision = decide_ab(logloss)

    assert not logloss.enough and not logloss.worse(0.0)
    assert logloss.stable is not None and logloss.canary is not None, "point estimates are still reported"
    assert (logloss.low, logloss.high, logloss.p_value) == (None, None, None)
    assert (decision.verdict, decision.winner, decision.low_relative) == ("not enough data", None, None)
    assert decision.summary.startswith(f"not enough data: online logloss needs >= {min_rows:,} rows")


def test_calibration_without_enough_positives_is_not_enough():
    variant, user_id, truth, outcome = _world(np.random.default_rng(2), 200)  # a few dozen clicks in all

    calibration = compare_calibration(variant, user_id, truth, outcome, min_positives=100)

    assert not calibration.enough and calibration.p_value is None and not calibration.worse(0.0)
    with pytest.raises(ValueError, match="lower-is-better"):
        decide_ab(calibration)
    with pytest.raises(ValueError, match="positive outcomes"):
        calibration_interval(truth, np.zeros_like(outcome), user_id)


def test_inputs_that_do_not_line_up_are_refused():
    with pytest.raises(ValueError, match="same length"):
        compare_logloss(["stable", "canary"], [1, 2], [0.1], [0, 1])
    with pytest.raises(ValueError, match="unknown variants \\['canry'\\]"):
        compare_logloss(["stable", "canry"], [1, 2], [0.1, 0.2], [0, 1])


def test_the_table_for_the_task_log_names_each_metric_with_its_numbers(big_world):
    variant, user_id, truth, outcome = big_world
    score = np.where(variant == "canary", np.minimum(truth * 1.4, 1 - 1e-6), truth)
    logloss = compare_logloss(variant, user_id, score, outcome)
    calibration = compare_calibration(variant, user_id, score, outcome)
    starved = compare_logloss(variant, user_id, score, outcome, min_rows=10**9)

    lines = format_comparisons([logloss, calibration, starved]).splitlines()

    assert lines[0].split() == ["metric", "stable", "canary", "diff", "95%", "CI", "p", "rows", "stable/canary"]
    assert lines[1].startswith("logloss") and f"{logloss.stable:.4g}" in lines[1] and f"{logloss.low:.4g}" in lines[1]
    assert lines[2].startswith("calibration") and f"{calibration.canary:.4g}" in lines[2] and "<0.0001" in lines[2]
    assert f"{calibration.stable_rows:,}/{calibration.canary_rows:,}" in lines[2]
    assert lines[3].count("n/a") == 2, "no interval and no p without enough data"
