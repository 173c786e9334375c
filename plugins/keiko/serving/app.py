"""The model server: an ASGI app that scores rows with the model's own feature code.

One model per process. The `production` version is loaded at start; POST /admin/load loads
another version (sha256 verified against the registry, warmed up) beside the serving one and
swaps a single reference, so requests in flight finish on the model they started with.
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
import time
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np
from pydantic import ValidationError
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from keiko.algorithms import TrainedModel, load_model_bytes
from keiko.columns import from_rows
from keiko.config import settings
from keiko.errors import KeikoError
from keiko.modeldef import ModelDefinition, load_model
from keiko.registry import Registry
from keiko.serving.validation import describe_errors, request_adapter
from keiko.storage import ArtifactStore

log = logging.getLogger("keiko.serving")

_EXAMPLE_VALUES = {"int": 1, "float": 1.0, "str": "warmup", "timestamp": dt.datetime(2026, 1, 1, 12)}


@dataclass(frozen=True)
class LoadedModel:
    version: int
    artifact_sha256: str
    model: TrainedModel
    loaded_at: str


class ModelServer:
    def __init__(self, definition: ModelDefinition, registry: Registry, store: ArtifactStore) -> None:
        self.definition = definition
        self.registry = registry
        self.store = store
        self.schema = definition.features.INPUT_SCHEMA
        self.adapter = request_adapter(self.schema)
        self.current: LoadedModel | None = None
        self.last_error: str | None = None
        self._load_lock = threading.Lock()

    def score(self, loaded: LoadedModel, rows: list[dict[str, Any]]) -> np.ndarray:
        features = self.definition.features.transform(from_rows(rows, self.schema), **loaded.model.feature_params)
        return loaded.model.predict(features)

    def load(self, version: int) -> LoadedModel:
        """Load, verify and warm up `version`, then make it the serving model. Blocking."""
        with self._load_lock:
            entry = self.registry.get(self.definition.name, version)
            if entry.status != "registered":
                raise KeikoError(f"v{version} is {entry.status}: not servable")
            model = load_model_bytes(self.store.read_verified(entry.artifact_uri, entry.artifact_sha256))
            candidate = LoadedModel(version, entry.artifact_sha256, model, dt.datetime.now(dt.UTC).isoformat())
            warmup = [{name: _EXAMPLE_VALUES[kind] for name, kind in self.schema.items()}] * 64
            for _ in range(3):
                predictions = self.score(candidate, warmup)
            if not np.all((predictions > 0) & (predictions < 1)):
                raise KeikoError(f"v{version} failed warm-up: predictions outside (0, 1)")
            self.current = candidate  # the swap: one reference assignment
            self.last_error = None
            log.info("serving %s v%s (sha256 %s)", self.definition.name, version, entry.artifact_sha256[:12])
            return candidate

    def load_production(self) -> None:
        try:
            version = self.registry.alias(self.definition.name, "production")
            if version is None:
                self.last_error = "no production version in the registry yet"
                return
            self.load(version)
        except Exception as exc:  # keep serving /healthz; /readyz reports why it is not ready
            self.last_error = f"loading production failed: {exc}"
            log.error(self.last_error)


def create_app(model: str, *, load_production: bool = True) -> Starlette:
    config = settings()
    server = ModelServer(load_model(model), Registry(config.registry_url), ArtifactStore(config.artifact_root))

    async def predict(request: Request) -> JSONResponse:
        loaded = server.current
        if loaded is None:
            return JSONResponse({"error": "no model loaded"}, status_code=503)
        try:
            body = server.adapter.validate_json(await request.body())
        except ValidationError as exc:
            return JSONResponse({"error": "invalid request", "detail": describe_errors(exc.errors())}, status_code=422)
        predictions = server.score(loaded, body["rows"])
        return JSONResponse({"model_version": loaded.version, "predictions": predictions.tolist()})

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
            }
        )

    async def admin_load(request: Request) -> JSONResponse:
        try:
            payload = await request.json()
            target = int(payload["version"])
        except (ValueError, KeyError, TypeError):
            return JSONResponse({"error": 'expected {"version": <int>}'}, status_code=422)
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

    @asynccontextmanager
    async def lifespan(_app: Starlette):
        if load_production:
            threading.Thread(target=server.load_production, name="load-production", daemon=True).start()
        yield

    app = Starlette(
        routes=[
            Route("/predict", predict, methods=["POST"]),
            Route("/healthz", healthz),
            Route("/readyz", readyz),
            Route("/version", version),
            Route("/admin/load", admin_load, methods=["POST"]),
        ],
        lifespan=lifespan,
    )
    app.state.server = server
    return app
