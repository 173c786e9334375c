"""Is the canary better than stable on live traffic? Online logloss and calibration, compared with user-clustered
standard errors.

Users are assigned to a variant by a salted hash of user_id, so a user's rows are correlated and all in one group:
the independent units are users, not rows. Treating rows as independent understates the variance and makes a
comparison "significant" far too often; every variance here is a ratio estimator's (delta method) over users.
Pure numpy/scipy on arrays of equal length: variant ("stable"|"canary"), user_id, score (predicted probability),
outcome (0/1; the caller drops rows whose outcome is not known yet).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.stats import norm

STABLE, CANARY = "stable", "canary"
CLIP = 1e-15
TEST = "Welch z-test, user-clustered"


@dataclass(frozen=True)
class Comparison:
    """One metric on both variants. difference = canary - stable, relative = difference / stable; low..high is
    difference's two-sided 1-alpha interval and p_value its two-sided p. When a group is below the minimum sample
    sizes (`enough` False) the point estimates that can be computed are kept, the interval and p are None.
    `target` None means lower is better (logloss); otherwise closer to target is better (calibration: 1.0)."""

    metric: str
    stable: float | None
    canary: float | None
    difference: float | None
    relative: float | None
    low: float | None
    high: float | None
    p_value: float | None
    stable_rows: int
    canary_rows: int
    stable_positives: int
    canary_positives: int
    enough: bool
    alpha: float = 0.05
    target: float | None = None
    min_rows: int = 0
    min_positives: int = 0

    def worse(self, margin: float) -> bool:
        """True when the canary is worse by more than `margin` relative to stable AND the interval rules out no
        change on the worse side. Lower-is-better metrics: relative > margin and low > 0. With a target: canary
        is further from the target than stable, |relative| > margin and the interval excludes 0."""
        if not self.enough or self.relative is None or self.low is None or self.high is None:
            return False
        if self.target is None:
            return self.relative > margin and self.low > 0
        further = abs(self.canary - self.target) > abs(self.stable - self.target)
        return further and abs(self.relative) > margin and (self.low > 0 or self.high < 0)


@dataclass(frozen=True)
class ABDecision:
    """What to tell a person: the winner (None unless one variant is significantly better), the verdict, a one-line
    summary, and the difference and its interval relative to stable (-0.035 = canary 3.5% lower)."""

    winner: str | None
    verdict: str
    summary: str
    relative: float | None
    low_relative: float | None
    high_relative: float | None


def _ratio(numerator, denominator, users) -> tuple[float | None, float | None]:
    """sum(numerator) / sum(denominator) and its variance with users as the independent units (delta method on
    per-user sums: k/(k-1) * sum (N_u - r D_u)^2 / (sum D_u)^2). None when undefined (no denominator, < 2 users)."""
    _, user_index = np.unique(users, return_inverse=True)
    per_user_num = np.bincount(user_index, weights=numerator)
    per_user_den = np.bincount(user_index, weights=denominator)
    total = per_user_den.sum()
    if total <= 0:
        return None, None
    ratio = float(per_user_num.sum() / total)
    k = len(per_user_num)
    if k < 2:
        return ratio, None
    residual = per_user_num - ratio * per_user_den
    return ratio, float(k / (k - 1) * np.sum(residual**2) / total**2)


def _arrays(variant, user_id, score, outcome):
    variant, user_id = np.asarray(variant), np.asarray(user_id)
    score, outcome = np.asarray(score, dtype=float), np.asarray(outcome, dtype=float)
    if not len(variant) == len(user_id) == len(score) == len(outcome):
        raise ValueError("variant, user_id, score and outcome must have the same length")
    unknown = ~((variant == STABLE) | (variant == CANARY))
    if unknown.any():
        raise ValueError(f"unknown variants {sorted(set(variant[unknown].tolist()))}: expected {STABLE!r}, {CANARY!r}")
    if not np.isin(outcome, (0.0, 1.0)).all():
        raise ValueError("outcome must be 0 or 1")
    return variant, user_id, score, outcome


def _compare(metric, numerator, denominator, variant, user_id, outcome, alpha, min_rows, min_positives, target):
    """Both groups' ratios, then a z test on the difference with Welch's unpooled se: with >= 1000 rows and tens
    of positives per group the normal approximation is fine (the t correction would change nothing visible)."""
    groups, counts = {}, {}
    for name in (STABLE, CANARY):
        rows = variant == name
        groups[name] = _ratio(numerator[rows], denominator[rows], user_id[rows])
        counts[name] = (int(rows.sum()), int(outcome[rows].sum()))
    (stable, stable_var), (canary, canary_var) = groups[STABLE], groups[CANARY]
    enough = all(n >= min_rows and pos >= min_positives for n, pos in counts.values())
    enough = enough and stable_var is not None and canary_var is not None
    difference = canary - stable if stable is not None and canary is not None else None
    relative = difference / stable if difference is not None and stable != 0 else None
    low = high = p_value = None
    if enough:
        se = float(np.sqrt(stable_var + canary_var))
        half_width = float(norm.ppf(1 - alpha / 2)) * se
        low, high = difference - half_width, difference + half_width
        p_value = float(2 * norm.sf(abs(difference) / se)) if se > 0 else float(difference == 0)
    (stable_rows, stable_positives), (canary_rows, canary_positives) = counts[STABLE], counts[CANARY]
    return Comparison(
        metric, stable, canary, difference, relative, low, high, p_value, stable_rows, canary_rows,
        stable_positives, canary_positives, enough, alpha, target, min_rows, min_positives,
    )  # fmt: skip


def compare_logloss(variant, user_id, score, outcome, *, alpha=0.05, min_rows=1000, min_positives=30) -> Comparison:
    """Mean per-row logloss (scores clipped to [1e-15, 1-1e-15]) of each variant; lower is better."""
    variant, user_id, score, outcome = _arrays(variant, user_id, score, outcome)
    p = np.clip(score, CLIP, 1 - CLIP)
    logloss = -(outcome * np.log(p) + (1 - outcome) * np.log1p(-p))
    return _compare("logloss", logloss, np.ones_like(logloss), variant, user_id, outcome, alpha, min_rows,
                    min_positives, None)  # fmt: skip


def compare_calibration(variant, user_id, score, outcome, *, alpha=0.05, min_positives=30) -> Comparison:
    """sum(score) / sum(outcome) of each variant: 1.0 is calibrated, 1.4 over-predicts by 40%."""
    variant, user_id, score, outcome = _arrays(variant, user_id, score, outcome)
    return _compare("calibration", score, outcome, variant, user_id, outcome, alpha, 0, min_positives, 1.0)


def calibration_interval(score, outcome, user_id, alpha=0.05) -> tuple[float, float, float]:
    """(ratio, low, high) of ONE group's sum(score)/sum(outcome): is it calibrated (does low..high contain 1.0)?"""
    score, outcome = np.asarray(score, dtype=float), np.asarray(outcome, dtype=float)
    ratio, variance = _ratio(score, outcome, np.asarray(user_id))
    if ratio is None or variance is None:
        raise ValueError("calibration needs positive outcomes from at least two users")
    half_width = float(norm.ppf(1 - alpha / 2) * np.sqrt(variance))
    return ratio, ratio - half_width, ratio + half_width


def _p(p: float | None) -> str:
    return "n/a" if p is None else ("<0.0001" if p < 1e-4 else f"={p:.4f}")


def decide_ab(comparison: Comparison, *, min_relative_gain: float = 0.0) -> ABDecision:
    """Verdict for a lower-is-better metric (logloss). "no difference" when the interval contains 0 or the gain
    (|relative|) is not above min_relative_gain; "not enough data" when a group is below the minimum sizes."""
    c = comparison
    if c.target is not None:
        raise ValueError(f"decide_ab needs a lower-is-better metric such as logloss, not {c.metric}")
    rows = f"{c.canary_rows:,} canary and {c.stable_rows:,} stable rows with outcomes"
    if not c.enough:
        needs = f"needs >= {c.min_rows:,} rows and >= {c.min_positives:,} positives per variant"
        seen = f"canary {c.canary_rows:,}/{c.canary_positives:,}, stable {c.stable_rows:,}/{c.stable_positives:,}"
        summary = f"not enough data: online {c.metric} {needs}; rows/positives {seen}"
        return ABDecision(None, "not enough data", summary, c.relative, None, None)
    low_relative, high_relative = c.low / c.stable, c.high / c.stable
    if c.high < 0 and -c.relative > min_relative_gain:
        winner, verdict = CANARY, "canary better"
    elif c.low > 0 and c.relative > min_relative_gain:
        winner, verdict = STABLE, "stable better"
    else:
        winner, verdict = None, "no difference"
    level = f"{100 * (1 - c.alpha):g}% CI"
    summary = (
        f"{verdict}: online {c.metric} canary {c.canary:.4f} vs stable {c.stable:.4f} ({c.relative:+.1%}, {level} "
        f"{low_relative:+.1%} .. {high_relative:+.1%}, p{_p(c.p_value)}, {TEST}), {rows}"
    )
    return ABDecision(winner, verdict, summary, c.relative, low_relative, high_relative)


def format_comparisons(comparisons: list[Comparison]) -> str:
    """Plain-text table for a task log, one row per metric."""

    def num(x: float | None) -> str:
        return "n/a" if x is None else f"{x:.4g}"

    header = ["metric", "stable", "canary", "diff", "CI", "p", "rows stable/canary"]
    if comparisons:
        header[4] = f"{100 * (1 - comparisons[0].alpha):g}% CI"
    table = [header] + [
        [c.metric, num(c.stable), num(c.canary), num(c.difference),
         "n/a" if c.low is None else f"{num(c.low)} .. {num(c.high)}", _p(c.p_value).lstrip("="),
         f"{c.stable_rows:,}/{c.canary_rows:,}"]
        for c in comparisons
    ]  # fmt: skip
    widths = [max(len(row[i]) for row in table) for i in range(len(header))]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip() for row in table)
