"""gate_drift: what each serving version was asked, against what it trained on.

Per version with at least monitor.min_rows answered rows:
- every input field's served values and the version's scores, bucketed as the version's training profile
  (and the scores as its test-day predictions) and judged by KL divergence, with gate_features' code
  (keiko.gates.divergence);
- each judged field's share of served values that training never saw, as the servers count them
  (keiko.serving.unseen decides which fields are judged and how).
The logged inputs are the request's, before any feature code: a client that sends a field in another form shows
here, where the warehouse (and so every training-side gate) never sees it.
"""

from __future__ import annotations

import pandas as pd

from keiko.contract import DriftGateResult, JoinOutcomesResult
from keiko.gates.divergence import divergence_validation
from keiko.gates.runner import Validation, report, run_validations
from keiko.serving.unseen import UnseenValues
from keiko.stages.context import StageContext
from keiko.stages.join_outcomes import SCORE, VERSION


def unseen_shares(served: pd.DataFrame, unseen: UnseenValues) -> dict[str, float]:
    """Per judged field, the share of `served` rows outside the training values (as UnseenValues.count counts)."""
    shares = {name: float((~served[name].isin(seen)).mean()) for name, seen in unseen.categories}
    shares |= {name: float((~served[name].between(low, high)).mean()) for name, low, high in unseen.ranges}
    return shares


def version_validations(
    ctx: StageContext, version: int, served: pd.DataFrame
) -> tuple[list[Validation], dict[str, float]]:
    """The version's two suites on its served rows, and its unseen shares for the result."""
    import great_expectations.expectations as gxe

    config, schema = ctx.model.config.monitor, ctx.model.request_schema  # what the servers logged of a request
    metrics = ctx.registry.get(ctx.model.name, version).metrics
    profile = ctx.store.read_json(metrics["profile_uri"])["columns"] if metrics.get("profile_uri") else {}
    if metrics.get("prediction_profile"):
        profile = {**profile, SCORE: metrics["prediction_profile"]}
    else:
        ctx.log(f"gate_drift: v{version} has no prediction profile (registered before the monitor): scores not judged")
    fields = [c for c, kind in schema.items() if kind != "timestamp" and c in profile]
    if SCORE in profile:
        fields.append(SCORE)
    thresholds = {c: config.kl_divergence.get(c, config.max_kl_divergence) for c in fields}
    part = f"v{version}"
    validations = [divergence_validation("divergence", served, profile, thresholds, config.top_values, part)]
    unseen = unseen_shares(served, UnseenValues.from_profile({"columns": profile}, schema))
    if unseen:
        validations.append(
            Validation(
                "unseen",
                pd.DataFrame([unseen]),
                [
                    gxe.ExpectColumnValuesToBeBetween(
                        column=name, min_value=0.0, max_value=config.unseen_share.get(name, config.max_unseen_share)
                    )
                    for name in unseen
                ],
                partition=part,
            )
        )
    return validations, unseen


def run(ctx: StageContext) -> DriftGateResult:
    config = ctx.model.config.monitor
    joined = ctx.result(JoinOutcomesResult)
    online = ctx.store.read_table(joined.online_uri).to_pandas()
    validations, unseen = [], {}
    for version in sorted(int(v) for v in joined.versions):
        served = online[online[VERSION] == version]
        if len(served) < config.min_rows:
            ctx.log(f"gate_drift: v{version} answered {len(served):,} rows < min_rows {config.min_rows}: not judged")
            continue
        suites, unseen[str(version)] = version_validations(ctx, version, served)
        validations += suites
    outcomes = run_validations(ctx, "drift", validations)
    divergence: dict[str, dict[str, float]] = {}
    for outcome in outcomes:
        if outcome.suite.startswith("divergence ") and outcome.value is not None:
            divergence.setdefault(outcome.suite.split(" v", 1)[1], {})[outcome.column] = outcome.value
    worst = max(
        ((v, f, kl) for v, fields in divergence.items() for f, kl in fields.items()), key=lambda x: x[2], default=None
    )
    summary = f"largest divergence v{worst[0]} {worst[1]} KL {worst[2]:.4f}" if worst else "no version judged"
    return report(ctx, DriftGateResult, outcomes, summary, day=joined.day, divergence=divergence, unseen_share=unseen)
