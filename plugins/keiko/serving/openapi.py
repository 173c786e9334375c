"""GET /openapi.json: the model server's REST API as an OpenAPI 3.1 document, derived from what the server runs.

Request bodies come from the validators themselves (pydantic's JSON Schema of each model's /predict adapter,
msgspec's of the inference protocol's request), paths from the models this process hosts, so the document cannot
drift from the code; the tests run schemathesis against a live server with it (tests/integration/test_openapi.py).
Every status a path can answer is documented with its body.
"""

from __future__ import annotations

from typing import Any

import msgspec
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

import keiko
from keiko.serving.app import Host
from keiko.serving.inference_protocol import GROUP_SEPARATOR, MODEL_PATH, VERSIONED
from keiko.serving.model_server import ModelServer
from keiko.serving.oip_rest import InferenceRequest

REF = "#/components/schemas/{name}"
ERROR = {"type": "object", "properties": {"error": {"type": "string"}}, "required": ["error"]}
ANSWER = {
    "type": "object",
    "properties": {
        "model_version": {"type": "integer"},
        "variant": {"type": "string", "enum": ["stable", "canary"]},
        "predictions": {"type": "array", "items": {"type": "number"}},
    },
    "required": ["model_version", "variant", "predictions"],
}
ANY_OBJECT = {"type": "object"}
STATUS_TEXT = {
    200: "OK", 400: "Bad request", 401: "No or wrong admin token", 404: "No such model or version", 409: "Refused",
    413: "Too large (serving.max_body_bytes, serving.max_rows)", 415: "Not application/json",
    422: "Invalid request", 503: "Not loaded yet",
}  # fmt: skip


def json_responses(ok: dict[str, Any], *errors: int) -> dict[str, Any]:
    responses = {"200": {"description": "OK", "content": {"application/json": {"schema": ok}}}}
    for status in errors:
        schema = ERROR if status != 503 else ANY_OBJECT  # /readyz says why in its own shape
        content = {"application/json": {"schema": schema}}
        responses[str(status)] = {"description": STATUS_TEXT[status], "content": content}
    return responses


def operation(summary: str, responses: dict[str, Any], request: dict[str, Any] | None = None, **extra) -> dict:
    op: dict[str, Any] = {"summary": summary, **extra, "responses": responses}
    if request is not None:
        op["requestBody"] = {"required": True, "content": {"application/json": {"schema": request}}}
    return op


def predict_schema(server: ModelServer, components: dict[str, Any]) -> dict[str, Any]:
    """The JSON Schema of `server`'s /predict body, its definitions added to `components` under the model's name."""
    prefix = f"{server.name}_"
    schema = server.adapter.json_schema(ref_template=REF.format(name=prefix + "{model}"))
    for name, definition in schema.pop("$defs", {}).items():
        components[prefix + name] = definition
    components[prefix + "PredictRequest"] = schema
    return {"$ref": REF.format(name=prefix + "PredictRequest")}


ADMIN_LOAD = {
    "type": "object",
    "properties": {"version": {"type": "integer", "minimum": 1}},
    "required": ["version"],
    "additionalProperties": False,
}


def _split_body(version: dict[str, Any], salt: dict[str, Any]) -> dict[str, Any]:
    weight = {"type": "number", "minimum": 0, "maximum": 1}
    return {
        "type": "object",
        "properties": {"version": version, "weight": weight, "salt": {"type": "string", "maxLength": 200, **salt}},
        "required": ["version", "weight", "salt"],
        "additionalProperties": False,
    }


# A canary needs a salt; ending one (version null) does not.
ADMIN_SPLIT = {
    "oneOf": [_split_body({"type": "integer", "minimum": 1}, {"minLength": 1}), _split_body({"type": "null"}, {})]
}
METRICS = {"200": {"description": "OK", "content": {"text/plain": {"schema": {"type": "string"}}}}}
GROUP_ANSWER = {"type": "object", "properties": {"models": {"type": "object", "additionalProperties": ANSWER}}}


def model_paths(prefix: str, server: ModelServer, components: dict[str, Any]) -> dict[str, Any]:
    tags = [server.name]
    admin = json_responses(ANY_OBJECT, 401, 409, 413, 415, 422)
    return {
        f"{prefix}/predict": {
            "post": operation(
                f"Score rows with {server.name}",
                json_responses(ANSWER, 413, 422, 503),
                predict_schema(server, components),
                tags=tags,
            )
        },
        f"{prefix}/version": {"get": operation("What it serves", json_responses(ANY_OBJECT), tags=tags)},
        f"{prefix}/readyz": {"get": operation("Ready to answer", json_responses(ANY_OBJECT, 503), tags=tags)},
        f"{prefix}/metrics": {"get": operation("Prometheus metrics", METRICS, tags=tags)},
        f"{prefix}/admin/load": {
            "post": operation("Serve another version (Bearer $KEIKO_ADMIN_TOKEN)", admin, ADMIN_LOAD, tags=tags)
        },
        f"{prefix}/admin/split": {
            "post": operation("Serve a canary beside it (version null: none)", admin, ADMIN_SPLIT, tags=tags)
        },
    }


def inference_paths(name: str, request: dict[str, Any]) -> dict[str, Any]:
    tags = ["inference protocol"]
    version = [{"name": "version", "in": "path", "required": True, "schema": {"type": "string"}}]
    infer = operation(f"Inference on {name}", json_responses(ANY_OBJECT, 400, 404, 413, 503), request, tags=tags)
    metadata = operation(f"{name}'s inputs and outputs", json_responses(ANY_OBJECT, 404), tags=tags)
    ready = operation(f"{name} ready", json_responses(ANY_OBJECT, 404, 503), tags=tags)
    paths = {}
    bases = [MODEL_PATH.format(model=name)]
    if GROUP_SEPARATOR not in name:  # a version names one model's
        bases.append(bases[0] + VERSIONED)
    for base in bases:
        parameters = {"parameters": version} if base.endswith(VERSIONED) else {}
        paths[base] = {"get": metadata, **parameters}
        paths[f"{base}/ready"] = {"get": ready, **parameters}
        paths[f"{base}/infer"] = {"post": infer, **parameters}
    return paths


def document(host: Host) -> dict[str, Any]:
    """The OpenAPI document of `host`'s REST API."""
    components: dict[str, Any] = {}
    (infer_schema,), infer_components = msgspec.json.schema_components([InferenceRequest], ref_template=REF)
    components.update(infer_components)
    names = list(host.servers)
    paths: dict[str, Any] = {
        "/healthz": {"get": operation("The process is up", json_responses(ANY_OBJECT))},
        "/v2/health/live": {"get": operation("Live", json_responses(ANY_OBJECT))},
        "/v2/health/ready": {"get": operation("Every model ready", json_responses(ANY_OBJECT, 503))},
        "/v2": {"get": operation("Server metadata", json_responses(ANY_OBJECT))},
    }
    for name, server in host.servers.items():
        paths.update(model_paths(f"/models/{name}", server, components))
        paths.update(inference_paths(name, infer_schema))
    if host.sole is not None:
        paths.update(model_paths("", host.sole, components))
    else:
        group = GROUP_SEPARATOR.join(names)
        first = next(iter(host.servers.values()))  # the group's /predict body: each model validates its own fields
        paths.update(inference_paths(group, infer_schema))
        paths["/readyz"] = {"get": operation("Every model ready", json_responses(ANY_OBJECT, 503))}
        paths["/version"] = {"get": operation("What each model serves", json_responses(ANY_OBJECT))}
        paths["/metrics"] = {"get": operation("Every model's Prometheus metrics", METRICS)}
        request = predict_schema(first, components)
        paths[f"/models/{group}/predict"] = {
            "post": operation(
                f"Score the same rows with {', '.join(names)}", json_responses(GROUP_ANSWER, 413, 422, 503), request
            )
        }
    return {
        "openapi": "3.1.0",
        "info": {"title": f"keiko model server ({', '.join(names)})", "version": keiko.__version__},
        "paths": paths,
        "components": {"schemas": components},
    }


def openapi_route(host: Host) -> Route:
    cached: list[dict[str, Any]] = []

    async def openapi(_: Request) -> JSONResponse:
        if not cached:
            cached.append(document(host))
        return JSONResponse(cached[0])

    return Route("/openapi.json", openapi)
