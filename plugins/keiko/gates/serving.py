"""gate_serving: the live replicas answer the golden set exactly as the offline candidate did, fast enough.
A batch model's replicas answer keys of its batch exactly as batch_score scored them (through the store).

Each golden row (sampled from the test day by evaluate, with the candidate's offline prediction) is
sent as its own single-auction /predict request to every replica. |served - offline| above the
tolerance is training/serving skew (a float32 cast, a feature computed differently online).

A check never changes production: a failure fails the task, and the DAG's `rollback` task (trigger rule
one_failed) reverts through the production path, visibly.
"""

from __future__ import annotations

import time

import numpy as np
import pandas as pd

from keiko.contract import BatchScoreResult, DeployResult, EvaluateResult, ServingGateResult
from keiko.gates.runner import Validation, report, run_validations
from keiko.rollout import SmokeTest
from keiko.serving.client import ModelServerClient
from keiko.serving.split import CANARY
from keiko.stages.context import StageContext


def probe(url: str, rows: list[dict], version: int, variant: str | None = None) -> tuple[pd.DataFrame, dict]:
    """One request per row (asking for `variant`: a canary's, at any weight): per-row skew, and the replica's
    latency and version facts."""
    served, latencies, versions = [], [], set()
    with ModelServerClient(url, timeout=5) as server:
        for row in rows:
            started = time.perf_counter()
            answer = server.predict([row], variant=variant)
            latencies.append((time.perf_counter() - started) * 1000)
            served.append(answer["predictions"][0])
            versions.add(answer["model_version"])
    facts = {
        "p95_latency_ms": float(np.percentile(latencies, 95)),
        "serves_deployed_version": int(versions == {version}),
    }
    return pd.DataFrame({"served": served}), facts


def run(ctx: StageContext) -> ServingGateResult:
    import great_expectations.expectations as gxe

    serving = ctx.model.config.serving
    deployed = ctx.result(DeployResult)
    golden = ctx.store.read_table(ctx.result(EvaluateResult).golden_uri)
    if serving.batch is None:
        known, index = SmokeTest.from_golden(golden, limit=golden.num_rows), ctx.model.config.row_id
        ids = golden[index].to_numpy()
    else:  # a batch model answers from its batch: as many of its keys as the golden set has rows
        scores = ctx.store.read_table(ctx.result(BatchScoreResult).scores_uri)
        known, index = SmokeTest.from_batch(scores, serving.batch.key, limit=golden.num_rows), serving.batch.key
        ids = np.asarray([row[index] for row in known.rows])
    rows, expected = known.rows, np.asarray(known.expected)
    urls = deployed.servers
    variant = CANARY if deployed.strategy != "rolling" else None  # the deployed version serves as the canary
    asked = f" as the {variant} variant" if variant else ""
    ctx.log(
        f"gate_serving {ctx.model.name}: {len(rows)} golden rows, one request each{asked}, to {len(urls)} replica(s)"
    )

    validations = []
    for index, url in enumerate(urls, start=1):
        served, facts = probe(url, rows, deployed.version, variant)
        served[index] = ids
        served["abs_error"] = (served["served"] - expected).abs()
        validations.append(
            Validation(
                f"replica{index}_answers",
                served,
                [gxe.ExpectColumnValuesToBeBetween(column="abs_error", min_value=0, max_value=serving.skew_tolerance)],
                index_column=index,
            )
        )
        validations.append(
            Validation(
                f"replica{index}_service",
                pd.DataFrame([facts]),
                [
                    gxe.ExpectColumnValuesToBeBetween(column="p95_latency_ms", max_value=serving.p95_latency_ms),
                    gxe.ExpectColumnValuesToBeBetween(column="serves_deployed_version", min_value=1, max_value=1),
                ],
            )
        )
    outcomes = run_validations(ctx, "serving", validations)
    worst_latency = max(v.frame["p95_latency_ms"].iloc[0] for v in validations if v.name.endswith("_service"))
    summary = f"{len(urls)} replica(s) answer {len(rows)} golden rows as offline; worst p95 {worst_latency:.2f} ms"
    return report(ctx, ServingGateResult, outcomes, summary, version=deployed.version)
