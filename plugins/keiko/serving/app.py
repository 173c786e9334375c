"""The model server's HTTP side: an ASGI app hosting one or several models (keiko.serving.model_server).

One process per core (`keiko serve --replicas N`; a pod with one CPU on Kubernetes): scoring is CPU-bound Python,
so more workers in one process would only queue on the GIL. A process hosts the models `keiko serve --model`
names (ctr, or ctr and cvr), each with its own version, canary, limits, prediction log and metrics, rolled out on
its own. Each model answers under `/models/<model>/` (predict, version, readyz, metrics, admin/load, admin/split);
a process hosting one model answers there and at the root too (what a rollout's URL addresses: the root, or
`/models/<model>`). `POST /models/ctr+cvr/predict` asks several models on the same rows at once.

Beside keiko's /predict, the Open Inference Protocol: REST under /v2 (keiko.serving.oip_rest) and gRPC on its own
port (keiko.serving.oip_grpc). /openapi.json documents the REST API (keiko.serving.openapi).

/predict and /v2/.../infer are the hot path: plain ASGI (no Request object), pydantic-core validation straight
from the bytes, and msgspec's JSON encoder. Every request is bounded by model.yaml's `serving:` limits
(keiko.serving.limits, .validation): the body's bytes (413 before it is read), its rows (413 before it is parsed)
and each string field's length (422). Scored rows are checked against the version's training values
(keiko.serving.unseen) and counted for GET /metrics (keiko.serving.monitoring). Every answered row goes to its
model's prediction log (keiko.serving.prediction_log), off the request path; the shutdown writes what it holds.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Annotated, Any

import msgspec
from pydantic import ConfigDict, Field, StrictInt, TypeAdapter, ValidationError, with_config
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Mount, Route
from typing_extensions import TypedDict

from keiko.batch_store import open_batch_store
from keiko.config import settings
from keiko.modeldef import ModelDefinition, load_model
from keiko.registry import open_registry
from keiko.serving.auth import VARIANT_HEADER, asked_variant, bearer_token_matches
from keiko.serving.batch_server import BatchModelServer
from keiko.serving.inference_protocol import GROUP_SEPARATOR, ModelGroup, ModelNotFound
from keiko.serving.limits import BodyTooLarge, read_body
from keiko.serving.model_server import (
    Answer,
    Canary,
    ModelServer,
    PredictRequest,
    ServingRefusal,
    answer_all,
    encode_predictions,
)
from keiko.serving.monitoring import ProcessCollector, exposition
from keiko.serving.prediction_log import PredictionLog
from keiko.serving.split import TrafficSplit
from keiko.serving.validation import describe_errors
from keiko.storage import ArtifactStore, open_store

log = logging.getLogger("keiko.serving")

JSON_HEADERS = [(b"content-type", b"application/json")]
PREDICT = "predict"  # /metrics' protocol of keiko's own /predict
UNROUTED = "unrouted"  # /metrics' variant of a request refused before it was routed (413, 422, 503)
_VARIANT_HEADER = VARIANT_HEADER.encode()
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
                "weight": Annotated[float, Field(ge=0.0, le=1.0, strict=True)],
                "salt": Annotated[str, Field(max_length=200)],
            },
        )
    )
)


async def respond(send: Any, status: int, body: bytes, headers: Sequence[tuple[bytes, bytes]] = JSON_HEADERS) -> None:
    """A whole response in two ASGI messages (keiko.serving.http_write makes them one write)."""
    headers = [*headers, (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def error_body(message: str, **extra: Any) -> bytes:
    return msgspec.json.encode({"error": message, **extra})


class Host:
    """The models one process serves, by name, and the groups of them requests have named."""

    def __init__(self, servers: Mapping[str, ModelServer], admin_token: str = "") -> None:
        self.servers = dict(servers)
        self.admin_token = admin_token
        self._groups: dict[str, ModelGroup] = {}

    @property
    def sole(self) -> ModelServer | None:
        return next(iter(self.servers.values())) if len(self.servers) == 1 else None

    def group(self, name: str) -> ModelGroup:
        """The model or group `name` names; ModelNotFound if it names a model this process does not host."""
        group = self._groups.get(name)
        if group is None:
            group = ModelGroup.resolve(name, self.servers)
            self._groups[name] = group  # only names of hosted models get here: a bounded set
        return group

    def asked(self, headers: Mapping[bytes, bytes]) -> str | None:
        """The variant a request's X-Keiko-Variant asks for. Header bytes are latin-1 (ASGI), never decoded as
        UTF-8: a stray byte is a header that asks nothing."""
        asked = headers.get(_VARIANT_HEADER)
        if asked is None:
            return None
        return asked_variant(
            asked.decode("latin-1"), headers.get(b"authorization", b"").decode("latin-1"), self.admin_token
        )


Reply = tuple[int, bytes, list[str]]  # status, body, each model's variant (for /metrics)


@dataclass(frozen=True)
class Pending:
    """A /predict request parsed and routed whose answer needs the event loop (a micro-batch, several models)."""

    group: ModelGroup
    requests: list[PredictRequest]
    asked: str | None


class PredictEndpoint:
    """POST /predict (the sole model), /models/<model>/predict and /models/<a>+<b>/predict as bare ASGI: the
    framework's Request/Response objects cost more than scoring. keiko.serving.http_protocol answers the same
    requests without ASGI through `group`, `answer_now`, `finish` and `observe`."""

    def __init__(self, host: Host) -> None:
        self.host = host

    async def __call__(self, scope: dict, receive: Any, send: Any, name: str | None) -> None:
        started = time.perf_counter()
        try:
            group = self.group(name)
        except ModelNotFound as exc:
            await respond(send, 404, error_body(str(exc)))
            return
        try:
            body = await read_body(scope, receive, group.max_body_bytes)
        except BodyTooLarge as exc:
            group.refuse(exc)
            reply = 413, exc.response(), [UNROUTED] * len(group.servers)
        else:
            reply = self.answer_now(scope["headers"], body, group)
            if isinstance(reply, Pending):
                reply = await self.finish(reply)
        await respond(send, reply[0], reply[1])
        self.observe(group, reply, started)

    def group(self, name: str | None) -> ModelGroup:
        """The model or group a /predict path names (None: the sole model's); ModelNotFound else."""
        if name is not None:
            return self.host.group(name)
        sole = self.host.sole
        if sole is None:
            names = list(self.host.servers)
            raise ModelNotFound(
                f"this server hosts {', '.join(names)}: POST /models/<model>/predict "
                f"(/models/{GROUP_SEPARATOR.join(names)}/predict asks them all)"
            )
        return self.host.group(sole.name)

    def answer_now(self, headers: Sequence[tuple[bytes, bytes]], body: bytes, group: ModelGroup) -> Reply | Pending:
        """The reply to a /predict body, or what `finish` completes when the answer needs the event loop."""
        servers = group.servers
        requests = []
        for server in servers:
            request, error = server.parse(body)
            if error is not None:
                status, detail = error
                if len(servers) > 1:
                    detail = msgspec.json.encode({"model": server.name, **msgspec.json.decode(detail)})
                return status, detail, [UNROUTED] * len(servers)
            requests.append(request)
        asked = self.host.asked(dict(headers)) if any(s.canary for s in servers) else None
        if group.single is None:
            return Pending(group, requests, asked)
        try:
            answer = group.single.answer_now(requests[0], asked)
        except Exception:
            log.exception("scoring failed")
            return 500, error_body("scoring failed"), [UNROUTED]
        if answer is None:
            return Pending(group, requests, asked)
        return self.reply(group, [answer])

    async def finish(self, pending: Pending) -> Reply:
        group = pending.group
        try:
            answers = await answer_all(group.servers, pending.requests, pending.asked)
        except ServingRefusal as exc:
            return exc.status, error_body(str(exc)), [UNROUTED] * len(group.servers)
        except Exception:
            log.exception("scoring failed")
            return 500, error_body("scoring failed"), [UNROUTED] * len(group.servers)
        return self.reply(group, answers)

    @staticmethod
    def reply(group: ModelGroup, answers: Sequence[Answer]) -> Reply:
        if group.single is not None:
            a = answers[0]
            return 200, encode_predictions(a.version, a.predictions, a.variant, a.detail), [a.variant]
        return 200, encode_group(group, answers), [a.variant for a in answers]

    @staticmethod
    def observe(group: ModelGroup, reply: Reply, started: float) -> None:
        elapsed = time.perf_counter() - started
        for server, variant in zip(group.servers, reply[2], strict=True):
            server.request_metrics.observe(reply[0], elapsed, variant, PREDICT)


def encode_group(group: ModelGroup, answers: Sequence[Answer]) -> bytes:
    return msgspec.json.encode(
        {
            "models": {
                s.name: {"model_version": a.version, "variant": a.variant, "predictions": a.predictions}
                for s, a in zip(group.servers, answers, strict=True)
            }
        }
    )


class ModelServerApp(Starlette):
    """Starlette for everything but the hot paths (POST /predict, /models/*/predict and /v2/models/*/infer), which
    skip the middleware stack and the router (with the exact timestamp conversion of keiko.columns: 6,476 -> 7,454
    req/s on two replicas here)."""

    def __init__(self, host: Host, **kwargs: Any) -> None:
        from keiko.serving.oip_rest import InferEndpoint

        super().__init__(**kwargs)
        self.host = host
        self.predict = PredictEndpoint(host)
        self.infer = InferEndpoint(host)

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] == "http" and scope["method"] == "POST":
            path = scope["path"]
            hot, name = predict_target(path)
            if hot:
                return await self.predict(scope, receive, send, name)
            if path.startswith("/v2/models/") and path.endswith("/infer"):
                return await self.infer(scope, receive, send, path)
        await super().__call__(scope, receive, send)


def predict_target(path: str) -> tuple[bool, str | None]:
    """Whether `path` is a /predict path, and the model or group it names (None: the sole model's /predict)."""
    if path == "/predict":
        return True, None
    if path.startswith("/models/") and path.endswith("/predict"):
        name = path[len("/models/") : -len("/predict")]
        if name and "/" not in name:
            return True, name
    return False, None


async def hot_path(_: Request) -> Response:
    raise AssertionError("ModelServerApp answers the hot paths' POSTs before routing")


def describe_canary(canary: Canary | None) -> dict[str, Any] | None:
    if canary is None:
        return None
    split = canary.split
    return {"version": split.version, "weight": split.weight, "salt": split.salt, "loaded_at": canary.model.loaded_at}


def describe(server: ModelServer) -> dict[str, Any]:
    """GET /version of a model."""
    if isinstance(server, BatchModelServer):
        return server.describe()
    loaded = server.current
    return {
        "model": server.name,
        "version": loaded.version if loaded else None,
        "artifact_sha256": loaded.artifact_sha256 if loaded else None,
        "loaded_at": loaded.loaded_at if loaded else None,
        "unseen_values": loaded.unseen.describe() if loaded else None,
        "canary": describe_canary(server.canary),
    }


def open_prediction_log(definition: ModelDefinition, url: str, aws_conn_id: str) -> PredictionLog | None:
    config = definition.config.serving.prediction_log
    if not config.enabled:
        return None
    store = ArtifactStore(url, aws_conn_id=aws_conn_id)
    return PredictionLog(model=definition.name, inputs=definition.request_schema, config=config, store=store)


def model_routes(server: ModelServer, token: str) -> list[BaseRoute]:
    """What one model answers under /models/<model>/ (and at the root of a process hosting only it), but predict."""

    async def version(_: Request) -> JSONResponse:
        return JSONResponse(describe(server))

    async def readyz(_: Request) -> JSONResponse:
        if not server.ready:
            return JSONResponse({"ready": False, "reason": server.last_error or "loading"}, status_code=503)
        return JSONResponse({"ready": True, "version": server.version})

    async def metrics(request: Request) -> Response:
        body, content_type = exposition(server.metrics_registry, request.headers.get("accept", ""))
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

    return [
        Route("/predict", hot_path, methods=["POST"]),  # other methods: 405 from the router
        Route("/version", version),
        Route("/readyz", readyz),
        Route("/metrics", metrics),
        Route("/admin/load", admin_load, methods=["POST"]),
        Route("/admin/split", admin_split, methods=["POST"]),
    ]


def process_routes(host: Host) -> list[BaseRoute]:
    """The process's own endpoints: liveness, readiness of every model, and what it hosts."""
    registry = ProcessCollector.registry([s.metrics_registry for s in host.servers.values()])

    async def healthz(_: Request) -> JSONResponse:
        return JSONResponse({"status": "ok"})

    async def readyz(_: Request) -> JSONResponse:
        waiting = {s.name: s.last_error or "loading" for s in host.servers.values() if not s.ready}
        if waiting:
            return JSONResponse({"ready": False, "waiting": waiting}, status_code=503)
        return JSONResponse({"ready": True, "versions": {s.name: s.version for s in host.servers.values()}})

    async def version(_: Request) -> JSONResponse:
        return JSONResponse({"model": None, "models": {name: describe(s) for name, s in host.servers.items()}})

    async def metrics(request: Request) -> Response:
        body, content_type = exposition(registry, request.headers.get("accept", ""))
        return Response(body, headers={"content-type": content_type})

    routes: list[BaseRoute] = [Route("/healthz", healthz)]
    if host.sole is None:
        routes += [Route("/readyz", readyz), Route("/version", version), Route("/metrics", metrics)]
    return routes


def create_app(
    models: str | Sequence[str],
    *,
    load_production: bool = True,
    admin_token: str | None = None,
    grpc_port: int | None = None,
    grpc_address: str = "127.0.0.1",
) -> ModelServerApp:
    """A server of `models` (one name, or several). `admin_token` defaults to KEIKO_ADMIN_TOKEN; without one,
    /admin/* are open (loopback use only: `keiko serve` refuses other hosts without a token). `grpc_port`: also
    serve the inference protocol over gRPC there (0: a free port, in app.state.grpc_port once started)."""
    from keiko.serving.oip_rest import oip_routes
    from keiko.serving.openapi import openapi_route

    names = [models] if isinstance(models, str) else list(models)
    if not names or len(set(names)) != len(names):
        raise ValueError(f"a model server hosts one or more distinct models, not {names}")
    config = settings()
    registry, store = open_registry(config.registry_url), open_store(config)
    servers: dict[str, ModelServer] = {}
    for name in names:
        definition = load_model(name)
        log_ = open_prediction_log(definition, config.prediction_log_url, config.aws_conn_id)
        if definition.config.serving.batch is not None:
            servers[name] = BatchModelServer(
                definition, registry, store, open_batch_store(config.batch_store_url), log_
            )
        else:
            servers[name] = ModelServer(definition, registry, store, log_)
    token = admin_token if admin_token is not None else os.environ.get("KEIKO_ADMIN_TOKEN", "")
    host = Host(servers, token)
    for name in names[1:]:
        host.group(f"{names[0]}{GROUP_SEPARATOR}{name}")  # models whose fields disagree fail here, not per request

    @asynccontextmanager
    async def lifespan(app: Starlette):
        for server in servers.values():
            if server.prediction_log is not None:
                server.prediction_log.start()
        if load_production:
            for server in servers.values():
                threading.Thread(target=server.load_initial, name=f"load-{server.name}", daemon=True).start()
        grpc_server = None
        if grpc_port is not None:
            from keiko.serving.oip_grpc import start_grpc

            grpc_server, app.state.grpc_port = await start_grpc(host, grpc_port, grpc_address)
        yield
        if grpc_server is not None:
            await grpc_server.stop(grace=5)
        for server in servers.values():  # SIGTERM (uvicorn's graceful shutdown): write what is held
            if server.prediction_log is not None:
                await run_in_threadpool(server.prediction_log.close)

    routes = process_routes(host)
    for name, server in servers.items():
        routes.append(Mount(f"/models/{name}", routes=model_routes(server, token)))
    if host.sole is not None:
        routes += model_routes(host.sole, token)
    routes += [Route("/models/{group}/predict", hot_path, methods=["POST"]), *oip_routes(host), openapi_route(host)]
    app = ModelServerApp(host, routes=routes, lifespan=lifespan)
    app.state.servers = servers
    app.state.server = next(iter(servers.values()))  # the first (the sole) model's
    app.state.grpc_port = None
    return app
