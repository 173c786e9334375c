"""evaluate: score the candidate and the production model on the same out-of-time test day.

Writes the evaluation (keiko.contract.Evaluation): metrics of both, the Bayes-optimal logloss of the day (from the
synthetic warehouse's hidden truth, when it exists) and per-slice metrics. Judging them is
gate_evaluation's job.
"""

from __future__ import annotations

import datetime as dt

import numpy as np
import pandas as pd
import pyarrow as pa

from keiko.algorithms import load_model_bytes
from keiko.columns import from_arrow
from keiko.contract import (
    CALIBRATION_PLOT,
    GOLDEN_EXPECTED,
    ROC_PLOT,
    EvaluateResult,
    Evaluation,
    Metrics,
    ProductionMetrics,
    TrainResult,
)
from keiko.metrics import summary
from keiko.profiling import profile_column
from keiko.registry import ModelVersion
from keiko.stages.context import StageContext
from keiko.stages.train import feature_arrays
from keiko.warehouse import quote_identifier


def slice_metrics(
    raw_test: pa.Table, columns: list[str], y: np.ndarray, p: np.ndarray
) -> dict[str, dict[str, Metrics]]:
    out: dict[str, dict[str, Metrics]] = {}
    for column in columns:
        values = np.asarray(raw_test.column(column).to_pandas().astype(str))
        out[column] = {str(v): Metrics(**summary(y[values == v], p[values == v])) for v in sorted(set(values))}
    return out


def true_probabilities(ctx: StageContext, ids: np.ndarray, day: dt.date) -> np.ndarray | None:
    """The generator's hidden probability of each row of `day` (by row_id; synthetic warehouse only), else None."""
    config = ctx.model.config
    if config.truth is None or config.truth.table not in ctx.warehouse.tables():
        return None
    key, column = config.row_id, config.truth.column
    truth = ctx.warehouse.query(
        f"SELECT {quote_identifier(key)}, {quote_identifier(column)} FROM {quote_identifier(config.truth.table)} "
        f"WHERE dt = '{day.isoformat()}'"
    )
    position = pd.Index(truth.column(key).to_numpy()).get_indexer(ids)
    if (position < 0).any():
        return None
    return truth.column(column).to_numpy()[position]


def against_truth(y: np.ndarray, p_true: np.ndarray, p_candidate: np.ndarray) -> dict[str, float]:
    """The ceiling: the Bayes-optimal model's logloss and calibration on these rows, and the candidate's
    calibration against the true probabilities (sum pred / sum true p: free of the labels' sampling noise)."""
    bayes = summary(y, p_true)
    return {
        "bayes_optimal_logloss": bayes["logloss"],
        "bayes_optimal_calibration": bayes["calibration"],
        "candidate_calibration_to_truth": float(np.sum(p_candidate) / np.sum(p_true)),
    }


def production_predictions(ctx: StageContext, raw_test: pa.Table) -> tuple[ModelVersion, np.ndarray] | None:
    version = ctx.registry.alias(ctx.model.name, "production")
    if version is None:
        return None
    entry = ctx.registry.get(ctx.model.name, version)
    model = load_model_bytes(ctx.store.read_verified(entry.artifact_uri, entry.artifact_sha256))
    # Production's own feature parameters, so a change of hashing in the candidate is compared fairly.
    features = ctx.model.features.transform(
        from_arrow(raw_test, ctx.model.features.INPUT_SCHEMA), **model.feature_params
    )
    return entry, model.predict(features)


GOLDEN_ROWS = 500


def golden_set(ctx: StageContext, raw_test: pa.Table, predictions: np.ndarray) -> pa.Table:
    """Test-day rows with the candidate's offline predictions: what the live service must answer.

    The offline answers come from the batch path (features stage on Arrow columns); the server builds
    the same rows from JSON. Any difference between the two is training/serving skew.
    """
    rng = np.random.default_rng(ctx.ds.toordinal())
    picked = np.sort(rng.choice(raw_test.num_rows, min(GOLDEN_ROWS, raw_test.num_rows), replace=False))
    columns = [ctx.model.config.row_id, *ctx.model.features.INPUT_SCHEMA]
    return raw_test.select(columns).take(picked).append_column(GOLDEN_EXPECTED, pa.array(predictions[picked]))


def draw_plots(ctx: StageContext, y: np.ndarray, predictions: dict[str, np.ndarray]) -> None:
    """The run page's ROC and reliability plots, drawn once, here, where the predictions are in memory."""
    from keiko.report.plots import calibration_png, roc_png

    try:
        for name, draw in ((ROC_PLOT, roc_png), (CALIBRATION_PLOT, calibration_png)):
            ctx.store.delete(ctx.layout.plot(name))  # no earlier run's plot left beside this run's if drawing fails
            ctx.store.write_bytes(ctx.layout.plot(name), draw(y, predictions))
    except Exception as exc:  # pictures for people: never the reason a model is not evaluated
        ctx.log(f"plots not drawn: {type(exc).__name__}: {exc}")


def run(ctx: StageContext) -> EvaluateResult:
    config = ctx.model.config
    trained = ctx.result(TrainResult)
    test_table = ctx.store.read_table(ctx.layout.split("test"))
    features, y = feature_arrays(test_table, config.row_id)
    ids = test_table.column(config.row_id).to_numpy()
    ctx.log(f"evaluate {ctx.model.name}: {len(y):,} test rows of {ctx.ds}")

    candidate_model = load_model_bytes(ctx.store.read_verified(trained.model_uri, trained.model_sha256))
    p_candidate = candidate_model.predict(features)
    candidate = Metrics(**summary(y, p_candidate))

    raw_test = ctx.store.read_table(ctx.layout.raw, filters=[("dt", "=", ctx.ds.isoformat())])
    production = None
    scored = production_predictions(ctx, raw_test)
    if scored is not None:
        production_entry, p_production = scored
        production = ProductionMetrics(
            version=production_entry.version,
            window_end=production_entry.window_end,  # after ds: production trained on the test day
            **summary(y, p_production),
        )
        ctx.log(f"production v{production.version}: logloss {production.logloss:.5f}, AUC {production.auc:.4f}")

    # A row describes the day its label horizon started (user_value: 7 days before it is dated).
    p_true = true_probabilities(ctx, ids, ctx.ds - dt.timedelta(days=config.label_horizon_days))
    truth = against_truth(y, p_true, p_candidate) if p_true is not None else {}
    bayes = truth.get("bayes_optimal_logloss")
    evaluation = Evaluation(
        model=ctx.model.name,
        ds=ctx.ds.isoformat(),
        test_rows=len(y),
        candidate=candidate,
        production=production,
        bayes_optimal_logloss=bayes,
        candidate_gap_to_bayes=(candidate.logloss / bayes - 1) if bayes else None,
        bayes_optimal_calibration=truth.get("bayes_optimal_calibration"),
        candidate_calibration_to_truth=truth.get("candidate_calibration_to_truth"),
        slices=slice_metrics(raw_test, config.slices, y, p_candidate),
        prediction_profile=profile_column(p_candidate, "float"),
    )
    ctx.log(
        f"candidate: logloss {candidate.logloss:.5f}, AUC {candidate.auc:.4f}, calibration {candidate.calibration:.3f}"
        + (
            f"; Bayes-optimal logloss {bayes:.5f} (gap {evaluation.candidate_gap_to_bayes:+.2%}), "
            f"calibration to the true probabilities {truth['candidate_calibration_to_truth']:.3f} "
            f"(the Bayes-optimal model's own calibration on these labels: {truth['bayes_optimal_calibration']:.3f})"
            if bayes
            else ""
        )
    )
    curves = {"candidate": p_candidate}
    if scored is not None:
        curves[f"production v{production_entry.version}"] = p_production
    if p_true is not None:
        curves["Bayes-optimal"] = p_true
    draw_plots(ctx, y, curves)
    return EvaluateResult(
        golden_uri=ctx.layout.golden,
        golden_sha256=ctx.store.write_table(ctx.layout.golden, golden_set(ctx, raw_test, p_candidate)),
        evaluation_uri=ctx.layout.evaluation,
        evaluation_sha256=ctx.layout.write(ctx.layout.evaluation, evaluation),
        candidate_logloss=candidate.logloss,
        candidate_auc=candidate.auc,
        bayes_optimal_logloss=bayes,
    )
