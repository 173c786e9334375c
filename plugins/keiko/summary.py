"""A short account of one run: data, metrics against production and the Bayes-optimal ceiling, versions, live answer."""

from __future__ import annotations

import datetime as dt

from keiko.contract import BatchScoreResult, Blessing, EvaluateResult, Evaluation, ExtractResult, RegisterResult
from keiko.errors import KeikoError
from keiko.rollout import json_rows
from keiko.serving.client import ModelServerClient
from keiko.stages.context import StageContext


def sample_rows(ctx: StageContext, n: int = 3) -> list[dict]:
    raw = ctx.store.read_table(
        ctx.layout.raw, columns=list(ctx.model.request_schema), filters=[("dt", "=", ctx.ds.isoformat())]
    )
    return json_rows(raw.slice(0, n))


def print_summary(model: str, ds: dt.date) -> None:
    ctx = StageContext.create(model, ds)
    extracted, registered = ctx.result(ExtractResult), ctx.result(RegisterResult)
    evaluation = ctx.layout.read(ctx.result(EvaluateResult).evaluation_uri, Evaluation)
    candidate, production = evaluation.candidate, evaluation.production
    bayes = evaluation.bayes_optimal_logloss

    print(f"\n== keiko {model} for {ds} ==")
    print(
        f"data      {extracted.rows:,} rows, window {extracted.window_start}..{extracted.window_end}, "
        f"test day {evaluation.test_rows:,} rows"
    )
    print(f"{'':10}{'logloss':>10} {'AUC':>8} {'calib':>7}")
    print(f"candidate {candidate.logloss:>10.5f} {candidate.auc:>8.4f} {candidate.calibration:>7.3f}")
    if production:
        print(
            f"prod v{production.version:<4}{production.logloss:>10.5f} {production.auc:>8.4f} "
            f"{production.calibration:>7.3f}"
        )
    else:
        print("prod      (none before this run)")
    if bayes:
        print(
            f"bayes-opt {bayes:>10.5f} {'':>8} {evaluation.bayes_optimal_calibration:>7.3f}   "
            f"(candidate: logloss {candidate.logloss / bayes - 1:+.2%} above the ceiling, "
            f"calibration {evaluation.candidate_calibration_to_truth:.3f} against the true probabilities)"
        )
    blessing = ctx.layout.read(ctx.layout.blessing, Blessing)
    print(f"blessing  {'blessed' if blessing.blessed else 'NOT blessed'}: {'; '.join(blessing.reasons)}")
    print(
        f"registered v{registered.version} ({registered.status})"
        + ("" if registered.created else ", an existing version: same window and artifact")
    )
    scored = ctx.layout.find(ctx.layout.step_result("batch_score"), BatchScoreResult)
    if scored is not None:
        print(
            f"batch     v{scored.version}: {scored.written:,} of {scored.keys:,} keys into {scored.store} "
            f"({scored.keys_per_second:,.0f} keys/s), fallback prior {scored.prior:.4f}"
        )
    print(f"deployed  production alias -> v{ctx.registry.alias(model, 'production')}")

    serving = ctx.model.config.serving
    rows = sample_rows(ctx)
    for url in ctx.settings.serving_urls(model, serving.port, serving.replicas):
        try:
            with ModelServerClient(url, timeout=5) as server:
                answer = server.predict(rows)
            shown = ", ".join(f"{p:.5f}" for p in answer["predictions"])
            print(f"live      {url} v{answer['model_version']} predicts [{shown}] for the first {len(rows)} test rows")
        except KeikoError as exc:
            print(f"live      {url} no answer: {exc}")
