"""Binary classification metrics used by evaluate (numpy only: the server and gates import this too)."""

from __future__ import annotations

import numpy as np

EPS = 1e-15


def logloss(y: np.ndarray, p: np.ndarray) -> float:
    p = np.clip(p, EPS, 1 - EPS)
    return float(-np.mean(y * np.log(p) + (1 - y) * np.log1p(-p)))


def auc(y: np.ndarray, p: np.ndarray) -> float:
    """ROC AUC via the rank-sum statistic, with ties given their average rank."""
    y = np.asarray(y, dtype=bool)
    n_pos, n_neg = int(y.sum()), int((~y).sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    order = np.argsort(p, kind="mergesort")
    sorted_p = p[order]
    ranks = np.empty(len(p), dtype=np.float64)
    # Average ranks over ties.
    _, first, counts = np.unique(sorted_p, return_index=True, return_counts=True)
    average = first + (counts + 1) / 2.0
    ranks[order] = np.repeat(average, counts)
    return float((ranks[y].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def calibration(y: np.ndarray, p: np.ndarray) -> float:
    """sum(pred) / sum(true): 1.0 is perfectly calibrated on aggregate."""
    positives = float(np.sum(y))
    return float(np.sum(p) / positives) if positives else float("inf")


def summary(y: np.ndarray, p: np.ndarray) -> dict[str, float]:
    return {
        "rows": len(y),
        "positives": int(np.sum(y)),
        "logloss": logloss(y, p),
        "auc": auc(y, p),
        "calibration": calibration(y, p),
        "mean_prediction": float(np.mean(p)) if len(p) else float("nan"),
    }
