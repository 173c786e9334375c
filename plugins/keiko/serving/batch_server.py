"""A batch model in a server process: its answers are looked up in the batch store, not computed.

`serving.mode: batch` models (user_value) are scored offline by batch_score; deploy moves the store's pointer. A
request's rows name keys (`serving.batch.key`); `answer` looks them all up in one call through the pointer (one
version for the whole request, keiko.batch_store) and answers each with its batch score. A key the batch lacks, or
a batch past its TTL, falls back (`serving.batch.fallback`): to the batch's prior, training's label rate; or, with
`online`, to the row scored by the batch's own version from the feature inputs the request sent beside the key (a
row without them gets the prior). Counted: /metrics' keiko_batch_lookups_total{result} and
keiko_batch_fallbacks_total{by}, and the prediction log's `variant` column ("batch" or "fallback"). With no batch
in the store at all there is nothing to answer with: 503.

Every protocol reaches it through ModelServer.answer, so /predict and the inference protocol answer alike; the
HTTP protocol's callback path (answer_now) never takes it, since a lookup waits for the store.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import math
import time
from typing import Any

from prometheus_client import Counter, Histogram

from keiko.algorithms import TrainedModel, load_model_bytes
from keiko.batch_store import FALLBACKS, BatchManifest, BatchStore
from keiko.columns import from_rows
from keiko.modeldef import ModelDefinition
from keiko.registry import Registry
from keiko.serving.model_server import Answer, ModelServer, PredictRequest, ServingRefusal, VersionNotServed
from keiko.serving.prediction_log import IDENTIFIERS, PredictionLog
from keiko.serving.split import BATCH, FALLBACK
from keiko.serving.validation import request_adapter
from keiko.storage import ArtifactStore

log = logging.getLogger("keiko.serving")

LOOKUP_RESULTS = (BATCH, *FALLBACKS)
PRIOR, ONLINE = "prior", "online"  # what answered a key that fell back (serving.batch.fallback)
FALLBACK_BY = (PRIOR, ONLINE)
# How stale readiness and the version gauge may be once a batch serves: the pointer is re-read at most this often for
# them (answers read it in their own lookup, always).
POINTER_READ_SECONDS = 1.0


class NoBatch(ServingRefusal):
    """The store has no batch of the model: nothing, not even a fallback, to answer with."""

    status = 503


class BatchModelServer(ModelServer):
    micro_batching = False  # nothing to batch: a request is one lookup

    def __init__(
        self,
        definition: ModelDefinition,
        registry: Registry,
        store: ArtifactStore,
        batch_store: BatchStore,
        prediction_log: PredictionLog | None = None,
    ) -> None:
        super().__init__(definition, registry, store, prediction_log)
        assert definition.config.serving.batch is not None
        self.key = definition.config.serving.batch.key
        self.online_fallback = definition.config.serving.batch.fallback == "online"
        if self.online_fallback:  # the rows may carry the feature inputs, checked as an online model's are
            self.adapter = request_adapter(
                self.schema, self.limits, IDENTIFIERS, optional=definition.features.INPUT_SCHEMA
            )
        self.models: dict[int, TrainedModel] = {}  # the versions the online fallback scored with, loaded once
        self.batch_store = batch_store
        self.manifests: dict[int, BatchManifest] = {}  # each batch's manifest, read once: its prior
        self.serving: BatchManifest | None = None  # the pointer's batch when last read (/version, /readyz)
        self.read_at = -math.inf  # time.monotonic() of that read
        self.lookup_counts = Counter(
            "keiko_batch_lookups",
            "Keys looked up in the batch store, by result: batch (answered with its score), missing (not in the "
            "serving batch), expired (the batch is past its TTL), no_batch; all but batch answered with the fallback",
            ["model", "result"],
            registry=self.metrics_registry,
        )
        for result in LOOKUP_RESULTS:
            self.lookup_counts.labels(self.name, result)
        self.fallback_counts = Counter(
            "keiko_batch_fallbacks",
            "Keys answered without their batch score, by what answered: prior (training's label rate) or online "
            "(the row scored by the batch's version from the inputs the request sent)",
            ["model", "by"],
            registry=self.metrics_registry,
        )
        for by in FALLBACK_BY:
            self.fallback_counts.labels(self.name, by)
        self.lookup_seconds = Histogram(
            "keiko_batch_lookup_seconds",
            "Time of one request's lookup in the batch store",
            ["model"],
            registry=self.metrics_registry,
            buckets=(0.0002, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 1.0),
        )

    @property
    def version(self) -> int | None:
        if self.serving is None or time.monotonic() - self.read_at > POINTER_READ_SECONDS:
            self.refresh()  # not ready: read again at once, the first batch may have been switched in
        return None if self.serving is None else self.serving.version

    def answer_now(self, request: PredictRequest, asked: str | None = None) -> Answer | None:
        return None  # a lookup waits for the store: always through the event loop

    async def answer(self, request: PredictRequest, asked: str | None = None, version: int | None = None) -> Answer:
        rows = request["rows"]
        keys = [str(row[self.key]) for row in rows]
        began = time.perf_counter()
        lookups = await self.batch_store.alookup(self.name, keys)
        self.lookup_seconds.labels(self.name).observe(time.perf_counter() - began)
        served = lookups[0].version
        if served is None:
            self.lookup_counts.labels(self.name, "no_batch").inc(len(keys))
            raise NoBatch(f"{self.name}: the batch store has no batch yet (no deploy has switched one in)")
        if version is not None and version != served:
            raise VersionNotServed(f"{self.name} v{version} is not served here (serving v{served}'s batch)")
        manifest = await self.manifest(served)
        scores: list[float] = []
        fell_back: list[int] = []
        for index, found in enumerate(lookups):
            self.lookup_counts.labels(self.name, found.fallback or BATCH).inc()
            if found.fallback is None:
                scores.append(found.score)
            else:
                scores.append(manifest.prior)
                fell_back.append(index)
        scored = [i for i in fell_back if self.online_fallback and self.has_inputs(rows[i])]
        if scored:
            model = await self.model(served)
            online = await asyncio.to_thread(self.score_rows, model, [rows[i] for i in scored])
            for index, value in zip(scored, online, strict=True):
                scores[index] = value
        self.fallback_counts.labels(self.name, ONLINE).inc(len(scored))
        self.fallback_counts.labels(self.name, PRIOR).inc(len(fell_back) - len(scored))
        self.log_answer(request, served, scores, fell_back)
        variant = FALLBACK if fell_back else BATCH
        scored_at = dt.datetime.fromtimestamp(manifest.scored_at, dt.UTC).isoformat(timespec="seconds")
        detail = {"scored_at": scored_at, "fallback": [found.fallback for found in lookups]}
        return Answer(served, variant, scores, detail)

    def log_answer(self, request: PredictRequest, version: int, scores: list[float], fell_back: list[int]) -> None:
        """The answers to the prediction log, the fallen-back rows under variant `fallback`."""
        if self.prediction_log is None:
            return
        rows, request_id = request["rows"], request.get("request_id")
        if not fell_back:
            self.prediction_log.record(request_id, version, rows, scores, BATCH)
            return
        back = set(fell_back)
        for variant, picked in ((BATCH, [i for i in range(len(rows)) if i not in back]), (FALLBACK, fell_back)):
            if picked:
                self.prediction_log.record(
                    request_id, version, [rows[i] for i in picked], [scores[i] for i in picked], variant
                )

    def has_inputs(self, row: dict[str, Any]) -> bool:
        return all(name in row for name in self.definition.features.INPUT_SCHEMA)

    def score_rows(self, model: TrainedModel, rows: list[dict[str, Any]]) -> list[float]:
        """The online fallback: rows scored as batch_score scores the key set, by the feature module and `model`."""
        columns = from_rows(rows, self.definition.features.INPUT_SCHEMA)
        return model.predict(self.definition.features.transform(columns, **model.feature_params)).tolist()

    async def model(self, version: int) -> TrainedModel:
        """`version`'s artifact (the batch's own), verified and loaded once: what the online fallback scores with."""
        model = self.models.get(version)
        if model is None:
            entry = await asyncio.to_thread(self.registry.get, self.name, version)
            data = await asyncio.to_thread(self.store.read_verified, entry.artifact_uri, entry.artifact_sha256)
            model = self.models[version] = load_model_bytes(data)
        return model

    async def manifest(self, version: int) -> BatchManifest:
        """`version`'s batch manifest (its prior), read from the store once."""
        manifest = self.manifests.get(version)
        if manifest is None:
            manifest = await asyncio.to_thread(self.batch_store.manifest, self.name, version)
            if manifest is None:  # the pointer named it: a manifest deleted since
                raise NoBatch(f"{self.name} v{version}'s batch has no manifest in the store")
            self.manifests[version] = manifest
        return manifest

    def refresh(self) -> None:
        """Read the pointer's batch (readiness and /version; answers read the pointer themselves)."""
        self.read_at = time.monotonic()
        try:
            self.serving = self.batch_store.pointer(self.name)
        except Exception as exc:
            self.last_error = f"batch store unreachable: {exc}"
            return
        self.last_error = None if self.serving else "no batch in the store yet: deploy switches one in"

    def load_initial(self) -> None:
        self.refresh()
        if self.serving is not None:
            log.info("serving %s from the batch of v%s", self.name, self.serving.version)

    def describe(self) -> dict[str, Any]:
        self.refresh()
        serving = self.serving
        return {
            "model": self.name,
            "mode": "batch",
            "version": serving.version if serving else None,
            "store": self.batch_store.describe(),
            "batch": None
            if serving is None
            else {"keys": serving.keys, "scored_at": serving.scored_at, "expires_at": serving.expires_at},
            "canary": None,
        }
