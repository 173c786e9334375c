"""The model server: an ASGI app that scores rows with the model's own feature code.

One model per process, one process per core (`keiko serve --replicas N`; a pod with one CPU on
Kubernetes): scoring is CPU-bound Python, so more workers in one process would only queue on the GIL.
At start it loads KEIKO_MODEL_VERSION if set (how a Kubernetes rollout pins a version), else the
`production` alias. POST /admin/load (a bearer token from KEIKO_ADMIN_TOKEN) loads another version
(sha256 verified against the registry, warmed up) beside the serving one and swaps a single
reference, so requests in flight finish on the model they started with.

/predict is the hot path: a plain ASGI endpoint (no Request object), pydantic-core validation
straight from the bytes, and msgspec's JSON encoder. Small requests are scored by the model's own
row scorer when its family has one (hashed LR: cached slot weights, keiko.serving.row_scorer);
otherwise the rows of all requests that arrived in the same event-loop turn are scored in one
vectorised call (micro-batching: CatBoost costs ~270 us a call for one row, ~25 us a row in a batch).

Every request is bounded by model.yaml's `serving:` limits (keiko.serving.limits, .validation): the body's
bytes (413 before it is read), its rows (413 before it is parsed) and each string field's length (422).
Scored rows are checked against the version's training values (keiko.serving.unseen) and counted for
GET /metrics (keiko.serving.monitoring). Every answered row goes to the prediction log
(keiko.serving.prediction_log), off the request path; the shutdown writes what it holds.
"""

from __future__ import annotations

import asyncio
import atexit
import datetime as dt
import functools
import gc
import hmac
import logging
import os
import threading
import time
from collections.abc import Callable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Annotated, Any

import msgspec
import numpy as np
from pydantic import ConfigDict, Field, StrictInt, TypeAdapter, ValidationError, with_config
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from typing_extensions import TypedDict

from keiko.algorithms import TrainedModel, load_model_bytes
from keiko.columns import example_row, from_rows
from keiko.config import settings
from keiko.errors import KeikoError
from keiko.modeldef import ModelDefinition, load_model
from keiko.registry import Registry, open_registry
from keiko.serving.limits import BodyTooLarge, read_body
from keiko.serving.monitoring import RequestMetrics, exposition, metrics_registry
from keiko.serving.prediction_log import IDENTIFIERS, PredictionLog
from keiko.serving.split import CANARY, STABLE, VARIANTS, TrafficSplit
from keiko.serving.unseen import UnseenValues
from keiko.serving.validation import describe_errors, request_adapter, too_many_rows
from keiko.storage import ArtifactStore, open_store

# A validated /predict body: {"rows": [...], "request_id"?: str}
PredictRequest = dict[str, Any]

log = logging.getLogger("keiko.serving")

# Requests up to this many rows are scored row by row from cached weights (~50 us a row); larger ones
# through the vectorised feature code (~5 ms set-up, then microseconds a row).
ROW_PATH_MAX_ROWS = 64
_JSON_HEADERS = [(b"content-type", b"application/json")]
REFUSALS = ("body_too_large", "too_many_rows", "invalid_request")  # /metrics: keiko_serving_refused_requests
# POST /admin/load's body: a JSON integer (not "3", 3.0 or true), versions count from 1.
_ADMIN_LOAD = TypeAdapter(
    with_config(ConfigDict(extra="forbid"))(TypedDict("AdminLoad", {"version": Annotated[StrictInt, Field(ge=1)]}))
)
# POST /admin/split's body: the canary's version (null: no canary, all traffic on the serving version), its weight
# and the rollout's salt.
_ADMIN_SPLIT = TypeAdapter(
    with_config(ConfigDict(extra="forbid"))(
        TypedDict(
            "AdminSplit",
            {
                "version": Annotated[StrictInt, Field(ge=1)] | None,
                "weight": Annotated[float, Field(ge=0.0, le=1.0)],
                "salt": Annotated[str, Field(max_length=200)],
            },
        )
    )
)
UNROUTED = "unrouted"  # /metrics' variant of a request refused before it was routed (413, 422, 503)
# A request may ask for a variant (known-answer checks of a canary at any weight) with this header; with an admin
# token configured, only together with it.
VARIANT_HEADER = b"x-keiko-variant"


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
        self.schema = definition.features.INPUT_SCHEMA
        self.limits = definition.config.serving
        self.adapter = request_adapter(self.schema, self.limits, IDENTIFIERS)
        self.current: LoadedModel | None = None
        self.canary: Canary | None = None
        self.unseen: dict[int, UnseenValues] = {}  # every version this process served: counters never go down
        self.refused = dict.fromkeys(REFUSALS, 0)
        self.last_error: str | None = None
        self._load_lock = threading.Lock()

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

    def answered(self, request: PredictRequest, version: int, scores: list[float], variant: str = STABLE) -> None:
        """Hand the answer to the prediction log (a request without its own id is named by the log)."""
        if self.prediction_log is not None:
            self.prediction_log.record(request.get("request_id"), version, request["rows"], scores, variant)

    def parse(self, body: bytes) -> tuple[LoadedModel | None, PredictRequest | None, tuple[int, bytes] | None]:
        """(model, request, None) for a valid request on a loaded server; else (.., .., the error response)."""
        loaded = self.current
        if loaded is None:
            return None, None, (503, b'{"error":"no model loaded"}')
        rows_sent = too_many_rows(body, self.limits.max_rows)
        if rows_sent is not None:
            self.refused["too_many_rows"] += 1
            limit = self.limits.max_rows
            error = f"too many rows: {rows_sent:,} in one request; at most {limit:,} (serving.max_rows)"
            return loaded, None, (413, msgspec.json.encode({"error": error, "max_rows": limit}))
        try:
            request = self.adapter.validate_json(body)
        except ValidationError as exc:
            self.refused["invalid_request"] += 1
            error = msgspec.json.encode({"error": "invalid request", "detail": describe_errors(exc.errors())})
            return loaded, None, (422, error)
        return loaded, request, None

    def predict_json(self, body: bytes) -> tuple[int, bytes]:
        """/predict without HTTP and without batching: (status, JSON body)."""
        loaded, request, error = self.parse(body)
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


def encode_predictions(version: int, predictions: list[float], variant: str = STABLE) -> bytes:
    return msgspec.json.encode({"model_version": version, "variant": variant, "predictions": predictions})


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


class PredictEndpoint:
    """POST /predict as a bare ASGI app: the framework's Request/Response objects cost more than scoring."""

    def __init__(self, server: ModelServer, metrics: RequestMetrics, admin_token: str = "") -> None:
        self.server = server
        self.metrics = metrics
        self.batcher = MicroBatcher(server)
        self.admin_token = admin_token

    def asked_variant(self, scope: dict) -> str | None:
        """The variant the request's X-Keiko-Variant header asks for (with the admin token, when one is set). Header
        bytes are latin-1 (ASGI), never decoded as UTF-8: a stray byte is a header that asks nothing."""
        headers = dict(scope["headers"])
        asked = headers.get(VARIANT_HEADER, b"").decode("latin-1")
        if asked not in VARIANTS:
            return None
        if self.admin_token and not bearer_token_matches(
            headers.get(b"authorization", b"").decode("latin-1"), self.admin_token
        ):
            return None
        return asked

    async def respond(self, scope: dict, body: bytes) -> tuple[int, bytes, str]:
        loaded, request, error = self.server.parse(body)
        if error is not None:
            return (*error, UNROUTED)
        asked = self.asked_variant(scope) if self.server.canary is not None else None
        loaded, variant = self.server.route(request, asked)
        rows = request["rows"]
        if loaded.scores_row_by_row(len(rows)):  # no batching: nothing to share between requests
            predictions = self.server.score(loaded, rows)
        else:
            try:
                predictions = await self.batcher.score(loaded, rows)
            except Exception:
                log.exception("scoring failed")
                return 500, b'{"error":"scoring failed"}', variant
        self.server.answered(request, loaded.version, predictions, variant)
        return 200, encode_predictions(loaded.version, predictions, variant), variant

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        started = time.perf_counter()
        try:
            status, body, variant = await self.respond(
                scope, await read_body(scope, receive, self.server.limits.max_body_bytes)
            )
        except BodyTooLarge as exc:
            self.server.refused["body_too_large"] += 1
            status, body, variant = 413, exc.response(), UNROUTED
        headers = [*_JSON_HEADERS, (b"content-length", str(len(body)).encode())]
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})
        self.metrics.observe(status, time.perf_counter() - started, variant)


class ModelServerApp(Starlette):
    """Starlette for everything but POST /predict, which skips the middleware stack and the router (with
    the exact timestamp conversion of keiko.columns: 6,476 -> 7,454 req/s on two replicas here)."""

    def __init__(self, predict: PredictEndpoint, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.predict = predict

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] == "http" and scope["path"] == "/predict" and scope["method"] == "POST":
            await self.predict(scope, receive, send)
        else:
            await super().__call__(scope, receive, send)


def describe_canary(canary: Canary | None) -> dict[str, Any] | None:
    if canary is None:
        return None
    split = canary.split
    return {"version": split.version, "weight": split.weight, "salt": split.salt, "loaded_at": canary.model.loaded_at}


def bearer_token_matches(authorization: str, token: str) -> bool:
    """`Authorization: Bearer <token>`, the scheme in any case (RFC 9110 11.1), the token compared in constant time."""
    scheme, _, credentials = authorization.partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(credentials.lstrip(" ").encode(), token.encode())


def open_prediction_log(definition: ModelDefinition, url: str, aws_conn_id: str) -> PredictionLog | None:
    config = definition.config.serving.prediction_log
    if not config.enabled:
        return None
    store = ArtifactStore(url, aws_conn_id=aws_conn_id)
    return PredictionLog(model=definition.name, inputs=definition.features.INPUT_SCHEMA, config=config, store=store)


def create_app(model: str, *, load_production: bool = True, admin_token: str | None = None) -> ModelServerApp:
    """`admin_token` defaults to KEIKO_ADMIN_TOKEN; without one, /admin/load is open (loopback use only:
    `keiko serve` refuses other hosts without a token)."""
    config = settings()
    definition = load_model(model)
    prediction_log = open_prediction_log(definition, config.prediction_log_url, config.aws_conn_id)
    server = ModelServer(definition, open_registry(config.registry_url), open_store(config), prediction_log)
    token = admin_token if admin_token is not None else os.environ.get("KEIKO_ADMIN_TOKEN", "")

    async def healthz(_: Request) -> JSONResponse:
        return JSONResponse({"status": "ok"})

    async def readyz(_: Request) -> JSONResponse:
        if server.current is None:
            return JSONResponse({"ready": False, "reason": server.last_error or "loading"}, status_code=503)
        return JSONResponse({"ready": True, "version": server.current.version})

    async def version(_: Request) -> JSONResponse:
        loaded = server.current
        return JSONResponse(
            {
                "model": model,
                "version": loaded.version if loaded else None,
                "artifact_sha256": loaded.artifact_sha256 if loaded else None,
                "loaded_at": loaded.loaded_at if loaded else None,
                "unseen_values": loaded.unseen.describe() if loaded else None,
                "canary": describe_canary(server.canary),
            }
        )

    registry = metrics_registry(server)
    request_metrics = RequestMetrics(model, registry)

    async def metrics(request: Request) -> Response:
        body, content_type = exposition(registry, request.headers.get("accept", ""))
        return Response(body, headers={"content-type": content_type})

    async def admin_refusal(request: Request) -> Response | None:
        if token and not bearer_token_matches(request.headers.get("authorization", ""), token):
            return JSONResponse({"error": "admin endpoints need Authorization: Bearer $KEIKO_ADMIN_TOKEN"}, 401)
        # A browser sends a cross-origin POST as application/json only after a CORS preflight, which this
        # server does not answer: so no web page can make a server without a token load a version.
        media_type = request.headers.get("content-type", "").partition(";")[0].strip().lower()
        if media_type != "application/json":
            sent = f"not {media_type}" if media_type else "none was sent"
            return JSONResponse({"error": f"admin endpoints take Content-Type: application/json ({sent})"}, 415)
        return None

    async def admin_load(request: Request) -> Response:
        refused = await admin_refusal(request)
        if refused is not None:
            return refused
        try:
            target = _ADMIN_LOAD.validate_json(
                await read_body(request.scope, request.receive, server.limits.max_body_bytes)
            )["version"]
        except BodyTooLarge as exc:
            return Response(exc.response(), status_code=413, media_type="application/json")
        except ValidationError as exc:
            return JSONResponse(
                {"error": 'expected {"version": <integer>}', "detail": describe_errors(exc.errors())}, 422
            )
        started = time.monotonic()
        try:
            loaded = await run_in_threadpool(server.load, target)
        except Exception as exc:
            serving = server.current.version if server.current else None
            return JSONResponse({"error": f"{exc}", "serving_version": serving}, status_code=409)
        return JSONResponse(
            {
                "version": loaded.version,
                "artifact_sha256": loaded.artifact_sha256,
                "seconds": time.monotonic() - started,
            }
        )

    async def admin_split(request: Request) -> Response:
        refused = await admin_refusal(request)
        if refused is not None:
            return refused
        try:
            raw = await read_body(request.scope, request.receive, server.limits.max_body_bytes)
            body = _ADMIN_SPLIT.validate_json(raw)
            split = None if body["version"] is None else TrafficSplit(body["version"], body["weight"], body["salt"])
        except BodyTooLarge as exc:
            return Response(exc.response(), status_code=413, media_type="application/json")
        except ValidationError as exc:
            expected = 'expected {"version": <integer> | null, "weight": <0..1>, "salt": <string>}'
            return JSONResponse({"error": expected, "detail": describe_errors(exc.errors())}, 422)
        except ValueError as exc:
            return JSONResponse({"error": str(exc)}, 422)
        try:
            canary = await run_in_threadpool(server.set_split, split)
        except Exception as exc:
            return JSONResponse({"error": f"{exc}", "canary": describe_canary(server.canary)}, status_code=409)
        return JSONResponse({"version": server.current.version if server.current else None,
                             "canary": describe_canary(canary)})  # fmt: skip

    @asynccontextmanager
    async def lifespan(_app: Starlette):
        if prediction_log is not None:
            prediction_log.start()
        if load_production:
            threading.Thread(target=server.load_initial, name="load-initial", daemon=True).start()
        yield
        if prediction_log is not None:  # SIGTERM (uvicorn's graceful shutdown): write what is held
            await run_in_threadpool(prediction_log.close)

    predict = PredictEndpoint(server, request_metrics, token)
    app = ModelServerApp(
        predict,
        routes=[
            Route("/predict", predict, methods=["POST"]),  # other methods: 405 from the router
            Route("/healthz", healthz),
            Route("/readyz", readyz),
            Route("/version", version),
            Route("/metrics", metrics),
            Route("/admin/load", admin_load, methods=["POST"]),
            Route("/admin/split", admin_split, methods=["POST"]),
        ],
        lifespan=lifespan,
    )
    app.state.server = server
    return app
