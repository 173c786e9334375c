"""batch_score: a batch model's registered version scores the run's key set into the batch store.

Only for `serving.mode: batch`. The key set is the model's `keys_sql` for the run's window (every key with its
feature inputs); it is scored a chunk at a time with the feature module and the algorithm that trained the
version, and each chunk is written to the store under the version, beside the batch that serves now. The last
write seals the batch (its manifest: keys, prior, TTL); nothing here moves the pointer that readers follow:
deploy does, through the production path, after gate_batch. A batch that fails half-way is never sealed, so it
can never be switched to; a rerun writes the same keys again.
"""

from __future__ import annotations

import math
import time

import numpy as np
import pyarrow as pa

from keiko.algorithms import load_model_bytes
from keiko.batch_store import BatchManifest
from keiko.columns import from_arrow
from keiko.contract import BatchScoreResult, FeaturesResult, RegisterResult
from keiko.errors import MissingDataError, StageSkipped
from keiko.stages.context import StageContext
from keiko.warehouse import render_sql

SCORE = "score"


def valid_scores(scores: np.ndarray) -> np.ndarray:
    """Which scores are probabilities (a NaN or out-of-range score is not written: its key falls back)."""
    return np.isfinite(scores) & (scores >= 0.0) & (scores <= 1.0)


def score_chunk(ctx: StageContext, model, chunk: pa.Table) -> np.ndarray:
    """One chunk's scores: the feature module's transform, then the version's predict, as training did."""
    module = ctx.model.features
    columns = from_arrow(chunk, module.INPUT_SCHEMA)
    return np.asarray(model.predict(module.transform(columns, **ctx.model.config.feature_params)), dtype=np.float64)


def skip_reason(ctx: StageContext) -> str | None:
    """Why this run scores no batch, or None."""
    name = ctx.model.name
    if ctx.model.config.serving.mode != "batch":
        return f"{name} is served online (serving.mode {ctx.model.config.serving.mode}): no batch to score"
    version = ctx.result(RegisterResult).version
    entry = ctx.registry.get(name, version)
    if entry.status != "registered":
        return f"{name} v{version} is {entry.status}: {entry.reason}; no batch scored, the serving batch stays"
    if ctx.deploy_mode == "skip":
        return f"{name} v{version}: the run asked deploy=skip; no batch scored"
    return None


def run(ctx: StageContext) -> BatchScoreResult:
    if (why := skip_reason(ctx)) is not None:
        raise StageSkipped(why)
    name, batch = ctx.model.name, ctx.model.config.serving.batch
    assert batch is not None  # modeldef: batch settings exactly when mode is batch
    version = ctx.result(RegisterResult).version
    entry = ctx.registry.get(name, version)
    model = load_model_bytes(ctx.store.read_verified(entry.artifact_uri, entry.artifact_sha256))

    start, end = ctx.window
    sql = render_sql(
        ctx.model.batch_keys_sql_path, ds=ctx.ds, window_days=ctx.model.config.window_days, model=name, what="keys"
    )
    ctx.store.write_bytes(ctx.layout.batch_keys_sql, sql.encode())
    ctx.warehouse.check_window(sql, start, end)
    keys_table = ctx.warehouse.query(sql)
    missing = [c for c in (batch.key, *ctx.model.features.INPUT_SCHEMA) if c not in keys_table.column_names]
    if missing:
        raise MissingDataError(f"{ctx.model.batch_keys_sql_path}: the key set lacks columns {missing}")
    total = keys_table.num_rows
    if total == 0:
        raise MissingDataError(f"{ctx.model.batch_keys_sql_path}: the key set of {start}..{end} is empty")

    store = ctx.resources.batch_store
    prior = ctx.result(FeaturesResult).splits["train"].label_rate
    ttl_seconds = batch.ttl_hours * 3600
    chunks = math.ceil(total / batch.chunk_rows)
    ctx.log(
        f"batch_score {name} v{version}: {total:,} keys ({batch.key}) of {start}..{end}, {chunks} chunk(s) of "
        f"{batch.chunk_rows:,}, into {store.describe()} (TTL {batch.ttl_hours:g} h); fallback prior {prior:.4f}"
    )
    scored_at = time.time()
    began = time.monotonic()
    written = unscored = 0
    kept_keys: list[pa.Array] = []
    kept_scores: list[np.ndarray] = []
    for index in range(chunks):
        chunk = keys_table.slice(index * batch.chunk_rows, batch.chunk_rows)
        scores = score_chunk(ctx, model, chunk)
        good = valid_scores(scores)
        keys = chunk.column(batch.key).filter(pa.array(good))
        written += store.write(name, version, keys.cast(pa.string()).to_pylist(), scores[good], ttl_seconds=ttl_seconds)
        unscored += int((~good).sum())
        kept_keys.append(keys.combine_chunks())
        kept_scores.append(scores[good])
        done = min((index + 1) * batch.chunk_rows, total)
        rate = done / max(time.monotonic() - began, 1e-9)
        ctx.log(
            f"[chunk {index + 1}/{chunks}] {done:,}/{total:,} keys ({done / total:.0%}), {rate:,.0f} keys/s, "
            f"ETA {(total - done) / rate:,.0f} s"
        )
    if unscored:
        ctx.log(f"{unscored:,} keys had no valid score (NaN or outside 0..1): not written, they fall back to the prior")

    scores_table = pa.table({batch.key: pa.concat_arrays(kept_keys), SCORE: np.concatenate(kept_scores)})
    sha256 = ctx.store.write_table(ctx.layout.batch_scores, scores_table)
    expires_at = scored_at + ttl_seconds
    store.seal(
        BatchManifest(
            model=name,
            version=version,
            keys=written,
            prior=prior,
            scored_at=scored_at,
            expires_at=expires_at,
            scores_uri=ctx.layout.batch_scores,
        )
    )
    seconds = time.monotonic() - began
    ctx.log(
        f"batch of {name} v{version} sealed: {written:,} keys written in {seconds:,.1f} s "
        f"({written / max(seconds, 1e-9):,.0f} keys/s); the pointer still names the serving batch until deploy"
    )
    return BatchScoreResult(
        version=version,
        keys=total,
        written=written,
        unscored=unscored,
        chunks=chunks,
        keys_per_second=written / max(seconds, 1e-9),
        scores_uri=ctx.layout.batch_scores,
        scores_sha256=sha256,
        store=store.describe(),
        prior=prior,
        scored_at=scored_at,
        expires_at=expires_at,
    )
