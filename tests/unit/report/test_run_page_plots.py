"""The run page's pictures: the curves are right, and the same data draws the same PNG."""

from __future__ import annotations

import io

import numpy as np
from matplotlib.image import imread

from keiko.metrics import auc
from keiko.report.plots import calibration_png, drift_png, reliability, roc_curve, roc_png


def scores(rows: int = 20_000, seed: int = 3) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    p = rng.beta(1, 30, rows)
    return (rng.random(rows) < p).astype(np.int64), p


def test_the_roc_curve_runs_from_0_to_1_and_its_area_is_the_auc():
    y, p = scores()
    fpr, tpr = roc_curve(y, p)
    assert len(fpr) <= 201 and (fpr[0], tpr[0], fpr[-1], tpr[-1]) == (0, 0, 1, 1)
    assert (np.diff(fpr) >= 0).all() and (np.diff(tpr) >= 0).all()
    assert abs(np.trapezoid(tpr, fpr) - auc(y, p)) < 0.005  # 200 points are enough for the picture
    assert roc_curve(np.zeros(10), np.linspace(0, 1, 10)) is None  # no positives: no curve


def test_reliability_bins_hold_equal_counts_and_follow_a_calibrated_model():
    y, p = scores()
    predicted, observed = reliability(y, p)
    assert len(predicted) == 10 and (np.diff(predicted) > 0).all()
    assert np.allclose(observed, predicted, atol=0.02)  # labels drawn from p: calibrated by construction


def test_plots_are_deterministic_pngs():
    y, p = scores()
    predictions = {"candidate": p, "production v1": np.clip(p * 1.2, 0, 1)}
    for draw in (lambda: roc_png(y, predictions), lambda: calibration_png(y, predictions)):
        first = draw()
        assert first == draw()
        assert imread(io.BytesIO(first)).shape[:2] == (420, 500)
    chart = drift_png({"country": 0.2, "os": 0.0}, {"country": 0.05, "os": 0.05})  # a KL of 0 on a log axis
    assert imread(io.BytesIO(chart)).shape[1] == 600
