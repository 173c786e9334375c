"""gate_batch (keiko.gates.batch) on a real StageContext of user_value in a tmp home, its batch in the session's
redis-server: the share of the key set in the store, and the new scores against the serving batch's."""

from __future__ import annotations

import datetime as dt
import time

import numpy as np
import pyarrow as pa
import pytest
import redis

from keiko.batch_store import BatchManifest
from keiko.contract import BatchGateResult, BatchScoreResult
from keiko.errors import GateFailed
from keiko.gates import batch as gate_batch
from keiko.stages.context import StageContext

pytestmark = pytest.mark.server

MODEL = "user_value"
DAY = dt.date(2026, 11, 21)
KEYS = 2000
HOUR = 3600.0


@pytest.fixture
def ctx(tmp_path, monkeypatch, redis_server) -> StageContext:
    home = tmp_path / "home"
    monkeypatch.setenv("KEIKO_HOME", str(home))
    monkeypatch.setenv("KEIKO_WAREHOUSE_DIR", str(home / "warehouse"))
    monkeypatch.setenv("KEIKO_BATCH_STORE_URL", redis_server)
    monkeypatch.delenv("KEIKO_RUN_PARAMS", raising=False)
    client = redis.Redis.from_url(redis_server)
    for name in client.scan_iter(match=f"keiko:batch:{{{MODEL}}}:*"):
        client.delete(name)
    client.close()
    return StageContext.create(MODEL, DAY)


def scored(ctx: StageContext, version: int, scores: np.ndarray, *, stored: int | None = None) -> BatchManifest:
    """`version`'s batch as batch_score leaves it: its Parquet, the first `stored` keys (default all) in the store,
    sealed, and (for the run's version) the BatchScoreResult the gate reads."""
    users = np.arange(1, len(scores) + 1, dtype=np.int64)
    uri = ctx.store.uri(MODEL, f"v{version}", "batch.parquet")
    sha = ctx.store.write_table(uri, pa.table({"user_id": users, "score": scores}))
    store = ctx.resources.batch_store
    n = len(scores) if stored is None else stored
    written = store.write(MODEL, version, [str(u) for u in users[:n]], scores[:n], ttl_seconds=HOUR)
    now = time.time()
    manifest = BatchManifest(MODEL, version, written, 0.14, now, now + HOUR, uri)
    store.seal(manifest)
    ctx.layout.write_result(
        BatchScoreResult(
            version=version, keys=len(scores), written=written, unscored=0, chunks=1, keys_per_second=1e5,
            scores_uri=uri, scores_sha256=sha, store=store.describe(), prior=0.14, scored_at=now,
            expires_at=now + HOUR,
        )
    )  # fmt: skip
    return manifest


def propensities(seed: int) -> np.ndarray:
    return np.random.default_rng(seed).beta(2, 12, KEYS)


def test_a_full_batch_like_the_serving_one_passes(ctx):
    scored(ctx, 1, propensities(1))
    ctx.resources.batch_store.switch(MODEL, 1, expected=None)
    scored(ctx, 2, propensities(2))
    result = gate_batch.run(ctx)
    assert isinstance(result, BatchGateResult) and result.success
    assert result.coverage == 1.0 and result.compared_with == 1
    assert result.score_kl is not None and result.score_kl < 0.05
    assert {o.suite for o in result.outcomes} == {"coverage", "scores", "store"}


def test_coverage_below_min_coverage_fails_naming_coverage(ctx):
    scored(ctx, 1, propensities(1), stored=KEYS - 100)  # 95% of the key set reached the store
    with pytest.raises(GateFailed, match=r"first: coverage .* on coverage: observed 0\.95") as failed:
        gate_batch.run(ctx)
    assert "expected [0.999, 1" in str(failed.value)
    written = ctx.layout.read_result(BatchGateResult)
    assert not written.success and written.coverage == pytest.approx(0.95)
    assert written.compared_with is None  # nothing serves: no scores suite
    assert [o.suite for o in written.outcomes if not o.passed] == ["coverage"]


def test_scores_that_moved_against_the_serving_batch_fail_the_scores_suite(ctx):
    scored(ctx, 1, propensities(1))
    ctx.resources.batch_store.switch(MODEL, 1, expected=None)
    scored(ctx, 2, propensities(1) * 3)
    with pytest.raises(GateFailed, match="first: scores "):
        gate_batch.run(ctx)
    written = ctx.layout.read_result(BatchGateResult)
    assert written.compared_with == 1 and written.score_kl > 0.05
    assert [o.suite for o in written.outcomes if not o.passed] == ["scores"]
