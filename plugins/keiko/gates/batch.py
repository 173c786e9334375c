"""gate_batch: is a batch model's new batch fit to serve? It judges; deploy switches (a check never moves production).

- coverage: the keys the store holds under the version / the keys of the run's key set;
- scores: their distribution against the serving batch's (KL over its deciles, keiko.gates.divergence), when a
  batch of another version serves;
- store: p95 of one-key lookups through the pointer, as a model server makes them.
"""

from __future__ import annotations

import time

import numpy as np
import pandas as pd

from keiko.contract import BatchGateResult, BatchScoreResult
from keiko.gates.divergence import divergence_validation
from keiko.gates.runner import Validation, report, run_validations
from keiko.profiling import profile_column
from keiko.stages.batch_score import SCORE
from keiko.stages.context import StageContext

LATENCY_PROBES = 200  # one-key lookups timed: ~10 a p95 rests on


def lookup_milliseconds(ctx: StageContext, keys: list[str]) -> np.ndarray:
    store = ctx.resources.batch_store
    store.lookup(ctx.model.name, keys[:1])  # the connection made before timing
    timings = []
    for key in keys:
        began = time.perf_counter()
        store.lookup(ctx.model.name, [key])
        timings.append((time.perf_counter() - began) * 1000)
    return np.asarray(timings)


def run(ctx: StageContext) -> BatchGateResult:
    import great_expectations.expectations as gxe

    name, settings = ctx.model.name, ctx.model.config.serving.batch
    assert settings is not None  # batch_score ran: a batch model
    scored = ctx.result(BatchScoreResult)
    store = ctx.resources.batch_store
    stored = store.count(name, scored.version)
    coverage = stored / scored.keys
    scores = ctx.store.read_table(scored.scores_uri)
    ctx.log(f"gate_batch {name} v{scored.version}: {stored:,} keys in {store.describe()} of {scored.keys:,} in the set")

    validations = [
        Validation(
            "coverage",
            pd.DataFrame([{"coverage": coverage, "unscored": scored.unscored}]),
            [gxe.ExpectColumnValuesToBeBetween(column="coverage", min_value=settings.min_coverage, max_value=1.0)],
        )
    ]
    serving = store.pointer(name)
    compared_with = serving.version if serving is not None and serving.version != scored.version else None
    if compared_with is not None:
        previous = ctx.store.read_table(serving.scores_uri).column(SCORE).to_numpy()
        reference = profile_column(previous, "float")
        current = pd.DataFrame({SCORE: scores.column(SCORE).to_numpy()})
        validation = divergence_validation("scores", current, {SCORE: reference}, {SCORE: settings.max_score_kl}, 2)
        validations.append(validation)
        ctx.log(f"scores judged against the serving batch v{compared_with} ({len(previous):,} keys)")
    else:
        ctx.log("no batch of another version serves: the scores' distribution has nothing to be judged against")

    rng = np.random.default_rng(ctx.ds.toordinal())
    keys = scores.column(settings.key).to_pylist()
    probes = [str(keys[i]) for i in rng.choice(len(keys), min(LATENCY_PROBES, len(keys)), replace=False)]
    p95 = float(np.percentile(lookup_milliseconds(ctx, probes), 95))
    validations.append(
        Validation(
            "store",
            pd.DataFrame([{"p95_lookup_ms": p95}]),
            [gxe.ExpectColumnValuesToBeBetween(column="p95_lookup_ms", min_value=0, max_value=settings.p95_lookup_ms)],
        )
    )
    outcomes = run_validations(ctx, "batch", validations)
    score_kl = next((o.value for o in outcomes if o.suite == "scores"), None)
    summary = f"coverage {coverage:.4%} ({stored:,}/{scored.keys:,}); p95 lookup {p95:.2f} ms" + (
        f"; scores against v{compared_with}'s" if compared_with is not None else ""
    )
    return report(
        ctx,
        BatchGateResult,
        outcomes,
        summary,
        version=scored.version,
        coverage=coverage,
        compared_with=compared_with,
        score_kl=score_kl,
        p95_lookup_ms=p95,
    )
