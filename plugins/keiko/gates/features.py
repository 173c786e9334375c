"""gate_features: expected feature columns without NaN/inf, input drift against production's training
profile (KL divergence per column), and the test day's label rate against training's."""

from __future__ import annotations

import numpy as np
import pandas as pd

from keiko.contract import DRIFT_PLOT, SPLITS, FeaturesGateResult, FeaturesResult, GateOutcome
from keiko.gates.divergence import divergence_validation
from keiko.gates.runner import Validation, report, run_validations
from keiko.stages.context import StageContext


def reference_profile(ctx: StageContext) -> tuple[dict, str]:
    """Production's training profile when there is a production model, else this run's own training days."""
    version = ctx.registry.alias(ctx.model.name, "production")
    if version is not None:
        uri = ctx.registry.get(ctx.model.name, version).metrics.get("profile_uri")
        if uri and ctx.store.exists(uri):
            return ctx.store.read_json(uri), f"production v{version}'s training profile"
    own = ctx.result(FeaturesResult).profile_uri
    return ctx.store.read_json(own), "this run's training days (no production profile)"


def draw_drift(ctx: StageContext, drifts: list[GateOutcome], thresholds: dict[str, float]) -> None:
    """The run page's drift chart (KL per feature against its threshold), drawn once, here."""
    from keiko.report.plots import drift_png

    kl = {o.column: o.value for o in drifts if o.value is not None}
    try:
        ctx.store.write_bytes(ctx.layout.plot(DRIFT_PLOT), drift_png(kl, {c: thresholds[c] for c in kl}))
    except Exception as exc:  # a picture for people: never the reason a gate fails
        ctx.log(f"drift chart not drawn: {type(exc).__name__}: {exc}")


def run(ctx: StageContext) -> FeaturesGateResult:
    import great_expectations.expectations as gxe

    config, module = ctx.model.config.gates.features, ctx.model.features
    ctx.store.delete(ctx.layout.plot(DRIFT_PLOT))  # an earlier run's chart must not pass for this run's
    features = ctx.result(FeaturesResult)
    expected_columns = [*module.FEATURE_COLUMNS, "label", ctx.model.config.row_id]
    validations = []
    for split in SPLITS:
        frame = ctx.store.read_table(features.splits[split].uri).to_pandas()
        expectations = [gxe.ExpectTableColumnsToMatchSet(column_set=expected_columns, exact_match=True)]
        expectations += [gxe.ExpectColumnValuesToNotBeNull(column=c) for c in frame.columns]
        expectations += [
            gxe.ExpectColumnValuesToBeBetween(
                column=c, min_value=-np.finfo(np.float64).max, max_value=np.finfo(np.float64).max
            )
            for c in frame.columns
            if pd.api.types.is_float_dtype(frame[c])
        ]
        validations.append(Validation(split, frame, expectations))

    profile, source = reference_profile(ctx)
    raw_test = ctx.store.read_table(
        ctx.layout.raw, columns=list(module.INPUT_SCHEMA), filters=[("dt", "=", ctx.ds.isoformat())]
    ).to_pandas()
    drift_columns = [c for c, kind in module.INPUT_SCHEMA.items() if kind != "timestamp" and c in profile["columns"]]
    thresholds = {c: config.kl_divergence.get(c, config.max_kl_divergence) for c in drift_columns}
    if len(raw_test) >= config.min_rows:
        validations.append(divergence_validation("drift", raw_test, profile["columns"], thresholds, config.top_values))
        ctx.log(f"gate_features {ctx.model.name}: drift of {len(drift_columns)} columns of {ctx.ds} against {source}")
    else:
        ctx.log(
            f"gate_features {ctx.model.name}: {len(raw_test):,} test rows < min_rows {config.min_rows}: "
            "drift not judged"
        )

    test_rate, train_rate = features.splits["test"].label_rate, features.splits["train"].label_rate
    ratio = test_rate / train_rate if train_rate else float("nan")
    balance = pd.DataFrame([{"test_train_label_ratio": ratio}])
    validations.append(
        Validation(
            "label_balance",
            balance,
            [
                gxe.ExpectColumnValuesToNotBeNull(column="test_train_label_ratio"),
                gxe.ExpectColumnValuesToBeBetween(
                    column="test_train_label_ratio",
                    min_value=config.test_train_label_ratio.min,
                    max_value=config.test_train_label_ratio.max,
                ),
            ],
        )
    )
    outcomes = run_validations(ctx, "features", validations)
    drifts = [o for o in outcomes if o.suite == "drift"]
    if drifts:
        draw_drift(ctx, drifts, thresholds)
    worst = max(drifts, key=lambda o: o.value or 0.0, default=None)
    summary = f"test/train label ratio {ratio:.3f}" + (
        f", largest drift {worst.column} KL {worst.observed}" if worst else ""
    )
    return report(ctx, FeaturesGateResult, outcomes, summary)
