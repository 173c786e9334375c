"""The run page's pictures: small PNGs drawn once, by the step that holds the data in memory.

evaluate draws the ROC and reliability plots, gate_features the drift chart; the page only links
them. matplotlib is imported inside the drawing functions (its Agg canvas, no pyplot state), so
importing this module, keiko.report or keiko.step_runner stays cheap.
"""

from __future__ import annotations

import io
from typing import TYPE_CHECKING

import numpy as np

from keiko.metrics import auc

if TYPE_CHECKING:
    from matplotlib.figure import Figure

DPI = 100
CURVE_POINTS = 200  # enough for a 500-pixel-wide picture, whatever the number of rows
RELIABILITY_BINS = 10
KL_FLOOR = 1e-6  # the drift chart's axis is logarithmic: a KL of 0 is drawn at this value
STYLES = {  # series the plots know by name; any other is drawn in matplotlib's next colour
    "candidate": {"color": "#1f77b4", "linewidth": 2.0},
    "Bayes-optimal": {"color": "#7f7f7f", "linestyle": "--", "linewidth": 1.2},
}
PRODUCTION_STYLE = {"color": "#ff7f0e", "linewidth": 1.5}


def _figure(width: float, height: float, left: float = 0.65) -> Figure:
    """A figure with margins fixed in inches (`left` for the tick labels): a layout engine would double
    the drawing time of these small plots."""
    from matplotlib.figure import Figure

    figure = Figure(figsize=(width, height), dpi=DPI)
    figure.subplots_adjust(left=left / width, right=1 - 0.15 / width, bottom=0.55 / height, top=1 - 0.35 / height)
    return figure


def _png(figure: Figure) -> bytes:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=DPI, metadata={"Software": None})  # same data, same bytes
    return buffer.getvalue()


def _style(name: str) -> dict:
    return STYLES.get(name) or (PRODUCTION_STYLE if name.startswith("production") else {})


def roc_curve(y: np.ndarray, p: np.ndarray, points: int = CURVE_POINTS) -> tuple[np.ndarray, np.ndarray] | None:
    """(false positive rates, true positive rates) at up to `points` thresholds; None without both classes."""
    y = np.asarray(y, dtype=bool)
    if y.all() or not y.any():
        return None
    order = np.argsort(-np.asarray(p), kind="mergesort")
    true_positives, false_positives = np.cumsum(y[order]), np.cumsum(~y[order])
    # The curve turns only where the score changes: keep the last row of each run of equal scores.
    ends = np.r_[np.flatnonzero(np.diff(np.asarray(p)[order])), len(y) - 1]
    ends = ends[np.unique(np.linspace(0, len(ends) - 1, min(points, len(ends))).astype(int))]
    return (
        np.r_[0.0, false_positives[ends] / false_positives[-1]],
        np.r_[0.0, true_positives[ends] / true_positives[-1]],
    )


def reliability(y: np.ndarray, p: np.ndarray, bins: int = RELIABILITY_BINS) -> tuple[np.ndarray, np.ndarray]:
    """(mean prediction, observed rate) of `bins` equal-count groups of rows ordered by prediction."""
    groups = [g for g in np.array_split(np.argsort(p, kind="mergesort"), bins) if len(g)]
    return np.array([p[g].mean() for g in groups]), np.array([y[g].mean() for g in groups])


def roc_png(y: np.ndarray, predictions: dict[str, np.ndarray]) -> bytes:
    """ROC curves of each named prediction of the same rows (candidate, production vN, Bayes-optimal)."""
    figure = _figure(5.0, 4.2)
    axes = figure.add_subplot()
    axes.plot([0, 1], [0, 1], color="#cccccc", linewidth=0.8)
    for name, p in predictions.items():
        curve = roc_curve(y, p)
        if curve is not None:
            axes.plot(*curve, label=f"{name} (AUC {auc(y, p):.4f})", **_style(name))
    axes.set(xlim=(0, 1), ylim=(0, 1), xlabel="false positive rate", ylabel="true positive rate", title="ROC")
    axes.legend(loc="lower right", fontsize="small")
    return _png(figure)


def calibration_png(y: np.ndarray, predictions: dict[str, np.ndarray]) -> bytes:
    """Reliability diagram: the observed rate of each decile of predictions against its mean prediction."""
    figure = _figure(5.0, 4.2)
    axes = figure.add_subplot()
    top = 0.0
    for name, p in predictions.items():
        predicted, observed = reliability(y, p)
        axes.plot(predicted, observed, marker="o", markersize=3, label=name, **_style(name))
        top = max(top, predicted.max(initial=0.0), observed.max(initial=0.0))
    top = top * 1.05 or 1.0
    axes.plot([0, top], [0, top], color="#cccccc", linewidth=0.8)
    axes.set(
        xlim=(0, top),
        ylim=(0, top),
        xlabel="mean prediction",
        ylabel="observed rate",
        title=f"Reliability ({RELIABILITY_BINS} equal-count bins)",
    )
    axes.legend(loc="upper left", fontsize="small")
    return _png(figure)


def drift_png(kl: dict[str, float], thresholds: dict[str, float]) -> bytes:
    """KL divergence of each feature (bars, red when at or over its threshold) and its threshold (ticks)."""
    columns = list(kl)
    values = np.maximum([kl[c] for c in columns], KL_FLOOR)
    limits = [thresholds[c] for c in columns]
    figure = _figure(6.0, 1.0 + 0.28 * max(len(columns), 1), left=0.2 + 0.075 * max(map(len, columns), default=0))
    axes = figure.add_subplot()
    rows = np.arange(len(columns))
    colours = ["#d62728" if kl[c] >= thresholds[c] else "#2ca02c" for c in columns]
    axes.barh(rows, values, color=colours, height=0.6)
    axes.scatter(limits, rows, marker="|", s=220, color="black", label="threshold", zorder=3)
    axes.set_yticks(rows, columns, fontsize="small")
    axes.invert_yaxis()
    axes.set_xscale("log")
    axes.set_xlim(KL_FLOOR, max([*values, *limits], default=1.0) * 3)
    axes.set(xlabel="KL divergence of the test day (log scale)", title="Feature drift")
    axes.legend(loc="lower right", fontsize="small")
    return _png(figure)
