"""One model in a server process: the version it serves, the canary beside it, and how a request is answered.

At start a ModelServer loads KEIKO_MODEL_VERSION if set (how a Kubernetes rollout pins a version), else the
`production` alias. `load` (POST /admin/load) loads another version (sha256 verified against the registry, warmed
up) beside the serving one and swaps a single reference, so requests in flight finish on the model they started
with; `set_split` (POST /admin/split) serves a canary beside it to a share of the users.

`answer` is what every protocol calls (keiko's /predict, the Open Inference Protocol over REST and gRPC): it
routes the request to the stable or the canary version, scores it and hands it to the prediction log. Small
requests are scored by the model's own row scorer when its family has one (hashed LR: cached slot weights,
keiko.serving.row_scorer); otherwise the rows of all requests that arrived in the same event-loop turn are scored
in one vectorised call (micro-batching: CatBoost costs ~270 us a call for one row, ~25 us a row in a batch).
"""

from __future__ import annotations

import asyncio
import atexit
import datetime as dt
import functools
import gc
import logging
import os
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import msgspec
import numpy as np
from pydantic import ValidationError

from keiko.algorithms import TrainedModel, load_model_bytes
from keiko.columns import example_row, from_rows
from keiko.errors import KeikoError
from keiko.modeldef import ModelDefinition
from keiko.registry import Registry
from keiko.serving.monitoring import RequestMetrics, metrics_registry
from keiko.serving.prediction_log import IDENTIFIERS, PredictionLog
from keiko.serving.split import CANARY, STABLE, TrafficSplit
from keiko.serving.unseen import UnseenValues
from keiko.serving.validation import describe_errors, request_adapter, too_many_rows
from keiko.storage import ArtifactStore

# A validated request: {"rows": [...], "request_id"?: str}
PredictRequest = dict[str, Any]

log = logging.getLogger("keiko.serving")

# Requests up to this many rows are scored row by row from cached weights (~50 us a row); larger ones
# through the vectorised feature code (~5 ms set-up, then microseconds a row).
ROW_PATH_MAX_ROWS = 64
REFUSALS = ("body_too_large", "too_many_rows", "invalid_request")  # /metrics: keiko_serving_refused_requests


class ServingRefusal(KeikoError):
    """A request this server cannot answer, for a reason the client is told: answered `status` with the message."""

    status = 500


class VersionNotServed(ServingRefusal):
    """A request named a version this server does not serve (neither the stable one nor the canary)."""

    status = 404  # as the inference protocol answers it


@dataclass(frozen=True)
class Answer:
    version: int
    variant: str
    predictions: list[float]
    detail: Mapping[str, Any] | None = None  # more of the answer, in its JSON (a batch model's fallbacks)


@dataclass(frozen=True)
class Canary:
    """The version beside the serving one and its share of the users: swapped as one reference."""

    model: LoadedModel
    split: TrafficSplit
    key: bytes  # the split's hash key, derived once


@dataclass(frozen=True)
class LoadedModel:
    version: int
    artifact_sha256: str
    model: TrainedModel
    loaded_at: str
    unseen: UnseenValues  # this version's counts of request values training never saw
    row_scorer: Callable[[Mapping[str, Any]], float] | None = None

    def scores_row_by_row(self, rows: int) -> bool:
        """Small requests go through the family's row scorer, when it has one; the rest through predict()."""
        return self.row_scorer is not None and rows <= ROW_PATH_MAX_ROWS


class ModelServer:
    """One hosted model. `micro_batching` off scores each large request on its own (bench/serving.py's baseline)."""

    micro_batching = True

    def __init__(
        self,
        definition: ModelDefinition,
        registry: Registry,
        store: ArtifactStore,
        prediction_log: PredictionLog | None = None,
    ) -> None:
        self.definition = definition
        self.registry = registry
        self.store = store
        self.prediction_log = prediction_log
        self.schema = definition.request_schema
        self.limits = definition.config.serving
        self.adapter = request_adapter(self.schema, self.limits, IDENTIFIERS)
        self.current: LoadedModel | None = None
        self.canary: Canary | None = None
        self.unseen: dict[int, UnseenValues] = {}  # every version this process served: counters never go down
        self.refused = dict.fromkeys(REFUSALS, 0)
        self.last_error: str | None = None
        self._load_lock = threading.Lock()
        self.batcher = MicroBatcher(self)
        self.metrics_registry = metrics_registry(self)
        self.request_metrics = RequestMetrics(definition.name, self.metrics_registry)

    @property
    def name(self) -> str:
        return self.definition.name

    @property
    def version(self) -> int | None:
        """The version serving now; None: none yet (not ready)."""
        return None if self.current is None else self.current.version

    @property
    def ready(self) -> bool:
        return self.version is not None

    def score_vectorised(self, loaded: LoadedModel, rows: list[dict[str, Any]]) -> list[float]:
        features = self.definition.features.transform(from_rows(rows, self.schema), **loaded.model.feature_params)
        return loaded.model.predict(features).tolist()

    def score(self, loaded: LoadedModel, rows: list[dict[str, Any]]) -> list[float]:
        loaded.unseen.count(rows)
        if loaded.scores_row_by_row(len(rows)):
            return [loaded.row_scorer(row) for row in rows]
        return self.score_vectorised(loaded, rows)

    def route(self, request: PredictRequest, asked: str | None = None) -> tuple[LoadedModel, str]:
        """The model that answers `request` and its variant: the canary for the users its split places on it (by
        the first row's user id: a request is one user's auction), or for a request that asks for it."""
        canary = self.canary
        if canary is None or asked == STABLE:
            return self.current, STABLE
        if asked == CANARY or canary.split.on_canary(request["rows"][0].get("user_id"), canary.key):
            return canary.model, CANARY
        return self.current, STABLE

    def served_version(self, version: int) -> tuple[LoadedModel, str]:
        """The model serving `version` and its variant (a request that names its version: the protocol's
        /versions/{v}); VersionNotServed for any other."""
        canary = self.canary
        if self.current is not None and self.current.version == version:
            return self.current, STABLE
        if canary is not None and canary.model.version == version:
            return canary.model, CANARY
        serving = f"v{self.current.version}" if self.current else "nothing"
        also = f", canary v{canary.model.version}" if canary else ""
        raise VersionNotServed(f"{self.name} v{version} is not served here (serving {serving}{also})")

    async def answer(self, request: PredictRequest, asked: str | None = None, version: int | None = None) -> Answer:
        """Route `request` (to `version` if it names one, else by its user; `asked`: a forced variant), score it
        and log it. Any protocol's answer comes from here."""
        loaded, variant = self.served_version(version) if version is not None else self.route(request, asked)
        answer = self._answer_now(request, loaded, variant)
        if answer is None:
            predictions = await self.batcher.score(loaded, request["rows"])
            self.answered(request, loaded.version, predictions, variant)
            answer = Answer(loaded.version, variant, predictions)
        return answer

    @property
    def answers_small_requests_now(self) -> bool:
        """Every version it serves has a row scorer: a request of up to ROW_PATH_MAX_ROWS rows never waits for
        a micro-batch."""
        current, canary = self.current, self.canary
        return (
            current is not None
            and current.row_scorer is not None
            and (canary is None or canary.model.row_scorer is not None)
        )

    def answer_now(self, request: PredictRequest, asked: str | None = None) -> Answer | None:
        """answer() without the event loop: None when the request's rows wait for a micro-batch."""
        if self.micro_batching and not self.answers_small_requests_now:
            return None  # every request waits for a batch (CatBoost): not routed twice, here and in answer()
        return self._answer_now(request, *self.route(request, asked))

    def _answer_now(self, request: PredictRequest, loaded: LoadedModel, variant: str) -> Answer | None:
        rows = request["rows"]
        # The row path shares nothing between requests; large requests share a vectorised call when batching.
        if self.micro_batching and not loaded.scores_row_by_row(len(rows)):
            return None
        predictions = self.score(loaded, rows)
        self.answered(request, loaded.version, predictions, variant)
        return Answer(loaded.version, variant, predictions)

    def answered(self, request: PredictRequest, version: int, scores: list[float], variant: str = STABLE) -> None:
        """Hand the answer to the prediction log (a request without its own id is named by the log)."""
        if self.prediction_log is not None:
            self.prediction_log.record(request.get("request_id"), version, request["rows"], scores, variant)

    def parse(self, body: bytes) -> tuple[PredictRequest | None, tuple[int, bytes] | None]:
        """A /predict body: (request, None) when it is valid and a model is loaded; else (None, the error response)."""
        if not self.ready:
            why = self.last_error or "no model loaded"
            return None, (503, msgspec.json.encode({"error": f"{self.name}: {why}"}))
        rows_sent = too_many_rows(body, self.limits.max_rows)
        if rows_sent is not None:
            self.refused["too_many_rows"] += 1
            limit = self.limits.max_rows
            error = f"too many rows: {rows_sent:,} in one request; at most {limit:,} (serving.max_rows)"
            return None, (413, msgspec.json.encode({"error": error, "max_rows": limit}))
        try:
            return self.adapter.validate_json(body), None
        except ValidationError as exc:
            self.refused["invalid_request"] += 1
            error = msgspec.json.encode({"error": "invalid request", "detail": describe_errors(exc.errors())})
            return None, (422, error)

    def predict_json(self, body: bytes) -> tuple[int, bytes]:
        """/predict without HTTP and without batching: (status, JSON body)."""
        request, error = self.parse(body)
        if error is not None:
            return error
        loaded, variant = self.route(request)
        scores = self.score(loaded, request["rows"])
        self.answered(request, loaded.version, scores, variant)
        return 200, encode_predictions(loaded.version, scores, variant)

    def prepare(self, version: int) -> LoadedModel:
        """Load, verify and warm up `version` (serving nothing yet). Blocking; under the load lock."""
        entry = self.registry.get(self.definition.name, version)
        if entry.status != "registered":
            raise KeikoError(f"v{version} is {entry.status}: not servable")
        model = load_model_bytes(self.store.read_verified(entry.artifact_uri, entry.artifact_sha256))
        candidate = LoadedModel(
            version,
            entry.artifact_sha256,
            model,
            dt.datetime.now(dt.UTC).isoformat(),
            unseen=self.unseen.get(version) or self.training_values(entry.metrics.get("profile_uri")),
            row_scorer=model.row_scorer(self.definition.features),
        )
        warmup = [example_row(self.schema)] * 64
        predictions = np.asarray(self.score_vectorised(candidate, warmup))
        if not np.all((predictions > 0) & (predictions < 1)):
            raise KeikoError(f"v{version} failed warm-up: predictions outside (0, 1)")
        # Equal up to exp()'s last bit (math.exp vs numpy's); anything more is a bug in the row path.
        if candidate.row_scorer is not None and abs(candidate.row_scorer(warmup[0]) - predictions[0]) > 1e-12:
            raise KeikoError(f"v{version} failed warm-up: row and vectorised scoring disagree")
        self.unseen[version] = candidate.unseen  # a reload of the version counts on where it left off
        return candidate

    def load(self, version: int) -> LoadedModel:
        """Make `version` the serving model: the canary's own loaded model when it is the canary (a promotion:
        the split ends), else loaded now. Blocking."""
        with self._load_lock:
            canary = self.canary
            if canary is not None and canary.model.version == version:
                candidate = canary.model
                self.current, self.canary = candidate, None  # the promotion: all users on it, in one turn
            else:
                candidate = self.prepare(version)
                self.current = candidate  # the swap: one reference assignment
            self.last_error = None
            freeze_heap()
            log.info("serving %s v%s (sha256 %s)", self.definition.name, version, candidate.artifact_sha256[:12])
            return candidate

    def set_split(self, split: TrafficSplit | None) -> Canary | None:
        """Serve `split.version` beside the serving version to `split.weight` of the users (loading it if it is
        not the canary already), or, with None, every user on the serving version. Blocking."""
        with self._load_lock:
            if split is None:
                self.canary = None
                log.info("no canary: every user on v%s", self.current.version if self.current else None)
                return None
            if self.current is None:
                raise KeikoError("no serving version to split traffic with")
            if split.version == self.current.version:
                raise KeikoError(f"v{split.version} serves already: a canary is another version")
            loaded = self.canary.model if self.canary and self.canary.model.version == split.version else None
            canary = Canary(loaded or self.prepare(split.version), split, split.key)
            self.canary = canary
            if loaded is None:
                freeze_heap()
            log.info("serving %s v%s, %s", self.definition.name, self.current.version, split.describe())
            return canary

    def training_values(self, profile_uri: str | None) -> UnseenValues:
        """What the version's training split held, from its training profile. A missing or unreadable profile
        leaves its values unjudged (the server still serves: monitoring data is no reason to refuse a model)."""
        if profile_uri is None:
            return UnseenValues.unknown(self.schema, "the registry records no training profile for this version")
        try:
            return UnseenValues.from_profile(self.store.read_json(profile_uri), self.schema)
        except Exception as exc:
            log.warning("training profile %s unreadable, unseen values not judged: %s", profile_uri, exc)
            return UnseenValues.unknown(self.schema, f"training profile {profile_uri} unreadable: {exc}")

    def load_initial(self) -> None:
        """KEIKO_MODEL_VERSION if set (a Kubernetes rollout pins it in the pod template), else production; then
        the canary KEIKO_CANARY_VERSION, _WEIGHT and _SALT name, if any (how a Kubernetes canary reaches pods)."""
        pinned = os.environ.get("KEIKO_MODEL_VERSION", "").strip()
        try:
            version = int(pinned) if pinned else self.registry.alias(self.definition.name, "production")
            if version is None:
                self.last_error = "no production version in the registry yet"
                return
            self.load(version)
        except Exception as exc:  # keep serving /healthz; /readyz reports why it is not ready
            source = f"KEIKO_MODEL_VERSION={pinned}" if pinned else "production"
            self.last_error = f"loading {source} failed: {exc}"
            log.error(self.last_error)
            return
        canary = os.environ.get("KEIKO_CANARY_VERSION", "").strip()
        if canary:
            try:
                weight = float(os.environ.get("KEIKO_CANARY_WEIGHT", "0"))
                self.set_split(TrafficSplit(int(canary), weight, os.environ.get("KEIKO_CANARY_SALT", "")))
            except Exception as exc:  # not ready: a pod must not serve stable alone while its peers split
                self.current = None
                self.last_error = f"loading the canary KEIKO_CANARY_VERSION={canary} failed: {exc}"
                log.error(self.last_error)


def freeze_heap() -> None:
    """Take what the process holds now (imports, the loaded models) out of the garbage collector's generations,
    so a full collection walks only what requests made since. Without it, the rows the prediction log holds
    (surviving objects) set off a full collection every few seconds, 45-95 ms each over the whole heap with
    the event loop stopped (p99 50 ms against 11 ms on one replica under wrk). Collected first, so no garbage is
    frozen with it (that collection pauses requests once per load, for tens of ms); unfrozen at exit, so the
    interpreter's shutdown frees it as it would. What is frozen is freed by reference counting only: a model
    swapped out by /admin/load goes when its last reference does, unless it holds a reference cycle."""
    gc.collect()
    gc.freeze()
    _unfreeze_at_exit()


@functools.cache  # registered once, however many loads
def _unfreeze_at_exit() -> None:
    atexit.register(gc.unfreeze)


async def answer_all(
    servers: Sequence[ModelServer], requests: Sequence[PredictRequest], asked: str | None, version: int | None = None
) -> list[Answer]:
    """Each server's answer to its request (several models asked on the same rows), scored concurrently so that
    micro-batching models batch together; one server without a task of its own (the common case)."""
    if len(servers) == 1:
        return [await servers[0].answer(requests[0], asked, version)]
    return list(await asyncio.gather(*(s.answer(r, asked, version) for s, r in zip(servers, requests, strict=True))))


def encode_predictions(
    version: int, predictions: list[float], variant: str = STABLE, detail: Mapping[str, Any] | None = None
) -> bytes:
    """/predict's answer."""
    answer = {"model_version": version, "variant": variant, "predictions": predictions}
    return msgspec.json.encode(answer if detail is None else {**answer, **detail})


class MicroBatcher:
    """Scores the rows of every request that reached it in one event-loop turn with one vectorised call per model.

    The first request of a turn schedules the flush with call_soon, so it runs once the requests whose
    bodies arrived in the same turn have joined: no timer, no added wait when traffic is light, and
    batches grow by themselves under load (requests queue while a batch is scored). Each request is scored by
    the model it was routed to when it arrived (the stable or the canary version), and its answer names it.
    """

    def __init__(self, server: ModelServer) -> None:
        self.server = server
        self.pending: list[tuple[LoadedModel, list[dict[str, Any]], asyncio.Future]] = []

    async def score(self, loaded: LoadedModel, rows: list[dict[str, Any]]) -> list[float]:
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        if not self.pending:
            loop.call_soon(self.flush)
        self.pending.append((loaded, rows, future))
        return await future

    def flush(self) -> None:
        pending, self.pending = self.pending, []
        by_model: dict[int, list[tuple[LoadedModel, list[dict[str, Any]], asyncio.Future]]] = {}
        for item in pending:
            by_model.setdefault(id(item[0]), []).append(item)
        for batch in by_model.values():
            loaded = batch[0][0]
            try:
                batch_rows = [row for _, rows, _ in batch for row in rows]
                loaded.unseen.count(batch_rows)
                predictions = self.server.score_vectorised(loaded, batch_rows)
            except Exception as exc:  # every request of the batch gets the error, none hangs
                for _, _, future in batch:
                    future.set_exception(exc)
                continue
            start = 0
            for _, rows, future in batch:
                future.set_result(predictions[start : start + len(rows)])
                start += len(rows)
