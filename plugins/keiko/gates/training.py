"""gate_training: the loss went down and settled, the artifact fits its budget, predictions are sane."""

from __future__ import annotations

import os
import tracemalloc

import pandas as pd

from keiko.algorithms import load_model_bytes
from keiko.contract import TrainingGateResult, TrainResult
from keiko.gates.runner import Validation, report, run_validations
from keiko.stages.context import StageContext
from keiko.stages.train import feature_arrays

# The last epoch may still move the valid loss by at most this much (relative) to count as converged.
CONVERGED = 0.01


def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def load_cost(data: bytes):
    """Load the artifact, measuring the memory it takes: Python's allocations (tracemalloc's peak) or, for
    libraries that allocate outside Python (CatBoost), the growth of the resident set, whichever is larger."""
    rss_before = _rss_bytes()
    tracemalloc.start()
    model = load_model_bytes(data)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return model, max(peak, _rss_bytes() - rss_before) / 1e6


def run(ctx: StageContext) -> TrainingGateResult:
    import great_expectations.expectations as gxe

    budget = ctx.model.config.gates.training
    trained = ctx.result(TrainResult)
    log = ctx.store.read_json(ctx.layout.training_log)
    losses = [epoch["valid_logloss"] for epoch in log["epochs"]]
    data = ctx.store.read_verified(trained.model_uri, trained.model_sha256)
    model, load_mb = load_cost(data)
    valid, _ = feature_arrays(ctx.store.read_table(ctx.layout.split("valid")), ctx.model.config.row_id)
    predictions = model.predict(valid)
    ctx.log(f"gate_training {ctx.model.name}: {len(losses)} epochs, artifact {len(data) / 1e6:.1f} MB")

    last_change = abs(losses[-1] - losses[-2]) / losses[-2] if len(losses) > 1 else 0.0
    facts = pd.DataFrame(
        [
            {
                "valid_loss_decrease": losses[0] - min(losses) if len(losses) > 1 else float("nan"),
                "last_epoch_relative_change": last_change,
                "artifact_mb": len(data) / 1e6,
                "load_memory_mb": load_mb,
            }
        ]
    )
    validations = [
        Validation(
            "convergence_and_budget",
            facts,
            [gxe.ExpectColumnValuesToNotBeNull(column=c) for c in facts.columns]
            + [
                gxe.ExpectColumnValuesToBeBetween(column="valid_loss_decrease", min_value=0, strict_min=True),
                gxe.ExpectColumnValuesToBeBetween(column="last_epoch_relative_change", max_value=CONVERGED),
                gxe.ExpectColumnValuesToBeBetween(column="artifact_mb", max_value=budget.max_artifact_mb),
                gxe.ExpectColumnValuesToBeBetween(column="load_memory_mb", max_value=budget.max_load_memory_mb),
            ],
        ),
        Validation(
            "valid_predictions",
            pd.DataFrame({"prediction": predictions}),
            [
                gxe.ExpectColumnValuesToNotBeNull(column="prediction"),
                gxe.ExpectColumnValuesToBeBetween(
                    column="prediction", min_value=0, max_value=1, strict_min=True, strict_max=True
                ),
                gxe.ExpectColumnStdevToBeBetween(column="prediction", min_value=budget.min_prediction_std),
            ],
        ),
    ]
    outcomes = run_validations(ctx, "training", validations)
    summary = (
        f"valid logloss {losses[0]:.5f} -> {min(losses):.5f}, artifact {len(data) / 1e6:.1f} MB, "
        f"load {load_mb:.0f} MB, prediction std {predictions.std():.4f}"
    )
    return report(ctx, TrainingGateResult, outcomes, summary)
