"""The Open Inference Protocol over HTTP/REST (keiko.serving.inference_protocol has what it means).

    GET  /v2/health/live, /v2/health/ready, /v2              the server
    GET  /v2/models/{model}[/versions/{v}][/ready]           a model's (or a group's) metadata and readiness
    POST /v2/models/{model}[/versions/{v}]/infer             inference

Tensors come as JSON `data`, or in the binary tensor extension tritonclient uses by default: the JSON header is
the first Inference-Header-Content-Length bytes of the body, each input's `parameters.binary_data_size` bytes
follow in order. Outputs are answered in binary when the request asks (`binary_data_output`, or an output's
`binary_data`), else as JSON. A refused request is {"error": "..."} with 400 (404: no such model or version,
413: too large, 503: not loaded), as the protocol says.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from typing import Annotated, Any

import msgspec
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import BaseRoute, Route

import keiko
from keiko.serving.app import JSON_HEADERS, UNROUTED, Host, error_body, hot_path, respond
from keiko.serving.inference_protocol import (
    MODEL_PATH,
    OUTPUT_DATATYPE,
    SERVER_NAME,
    VERSIONED,
    ModelGroup,
    ProtocolError,
    Tensor,
    raw_scores,
    raw_tensor,
)
from keiko.serving.limits import BodyTooLarge, read_body
from keiko.serving.model_server import Answer, ModelServer, ServingRefusal

log = logging.getLogger("keiko.serving")
PROTOCOL = "v2_rest"  # /metrics' protocol label
HEADER_LENGTH = b"inference-header-content-length"
BINARY_HEADERS = [(b"content-type", b"application/octet-stream")]
Parameters = dict[str, str | int | float | bool]


Name = Annotated[str, msgspec.Meta(min_length=1)]


class RequestInput(msgspec.Struct):
    name: Name
    shape: list[Annotated[int, msgspec.Meta(ge=0)]]
    datatype: str
    parameters: Parameters = {}
    data: list[Any] | None = None


class RequestOutput(msgspec.Struct):
    name: Name
    parameters: Parameters = {}


class InferenceRequest(msgspec.Struct):
    """The protocol's request, as its specification has it (msgspec checks it, and /openapi.json documents it)."""

    inputs: Annotated[list[RequestInput], msgspec.Meta(min_length=1)]
    id: str | None = None
    parameters: Parameters = {}
    outputs: list[RequestOutput] | None = None


_DECODER = msgspec.json.Decoder(InferenceRequest)


def parse_infer_path(path: str) -> tuple[str, str]:
    """(model, version or "") of /v2/models/{model}[/versions/{v}]/infer."""
    parts = path.split("/")  # "", "v2", "models", name, ["versions", v,] "infer"
    if len(parts) == 5:
        return parts[3], ""
    if len(parts) == 7 and parts[4] == "versions":
        return parts[3], parts[5]
    raise ProtocolError(f"no such endpoint: {path} (POST {MODEL_PATH}/infer, or {MODEL_PATH}{VERSIONED}/infer)")


def decode_request(body: bytes, header_length: int | None) -> InferenceRequest:
    """The JSON header and each input's data, from JSON or from the binary extension's trailing bytes."""
    head = body if header_length is None else body[:header_length]
    if header_length is not None and not 0 < header_length <= len(body):
        raise ProtocolError(f"Inference-Header-Content-Length {header_length} is not within the body's {len(body)}")
    try:
        return _DECODER.decode(head)
    except msgspec.ValidationError as exc:
        raise ProtocolError(f"not an inference request: {exc}") from None
    except msgspec.DecodeError as exc:
        raise ProtocolError(f"the request is not JSON: {exc}") from None


def tensors(request: InferenceRequest, binary: bytes) -> list[Tensor]:
    decoded, at = [], 0
    for item in request.inputs:
        size = item.parameters.get("binary_data_size")
        if size is None:
            if item.data is None:
                raise ProtocolError(f"input '{item.name}' has neither data nor parameters.binary_data_size")
            decoded.append(Tensor(item.name, item.datatype, item.shape, item.data))
            continue
        if not isinstance(size, int) or isinstance(size, bool) or size < 0 or at + size > len(binary):
            raise ProtocolError(f"input '{item.name}': binary_data_size {size!r} runs past the body's binary data")
        decoded.append(raw_tensor(item.name, item.datatype, item.shape, binary[at : at + size]))
        at += size
    if at != len(binary):
        raise ProtocolError(f"{len(binary) - at} bytes of binary data follow the inputs' binary_data_size")
    return decoded


def wants_binary(request: InferenceRequest, output: str) -> bool:
    for requested in request.outputs or ():
        if requested.name == output and "binary_data" in requested.parameters:
            return bool(requested.parameters["binary_data"])
    return bool(request.parameters.get("binary_data_output", False))


def encode_response(
    group: ModelGroup, servers: Sequence[ModelServer], answers: Sequence[Answer], request: InferenceRequest
) -> tuple[bytes, list[tuple[bytes, bytes]]]:
    """The response body and its headers (the binary extension's when any output is binary)."""
    outputs, raw = [], []
    for server, answer in zip(servers, answers, strict=True):
        output: dict[str, Any] = {
            "name": server.name,
            "datatype": OUTPUT_DATATYPE,
            "shape": [len(answer.predictions)],
            "parameters": {"model_version": answer.version, "variant": answer.variant},
        }
        if wants_binary(request, server.name):
            data = raw_scores(answer.predictions)
            output["parameters"]["binary_data_size"] = len(data)
            raw.append(data)
        else:
            output["data"] = answer.predictions
        outputs.append(output)
    response: dict[str, Any] = {"model_name": group.name}
    if group.single is not None:
        response["model_version"] = str(answers[0].version)
        response["parameters"] = {"variant": answers[0].variant}
    if request.id is not None:
        response["id"] = request.id
    response["outputs"] = outputs
    head = msgspec.json.encode(response)
    if not raw:
        return head, []
    return b"".join([head, *raw]), [*BINARY_HEADERS, (HEADER_LENGTH, str(len(head)).encode())]


class InferEndpoint:
    """POST /v2/models/{model}[/versions/{v}]/infer, as bare ASGI (as /predict)."""

    def __init__(self, host: Host) -> None:
        self.host = host

    async def __call__(self, scope: dict, receive: Any, send: Any, path: str) -> None:
        started = time.perf_counter()
        group: ModelGroup | None = None
        servers: Sequence[ModelServer] = ()
        variants: list[str] = []
        try:
            name, version_text = parse_infer_path(path)
            group = self.host.group(name)
            version = group.version(version_text) if version_text else None
            headers = dict(scope["headers"])
            body = await read_body(scope, receive, group.max_body_bytes)
            length = headers.get(HEADER_LENGTH, b"")
            head = int(length) if length.isdigit() else None  # the binary extension: JSON, then the tensors
            request = decode_request(body, head)
            binary = body[head:] if head is not None else b""
            servers = group.outputs(o.name for o in request.outputs or ())
            rows = group.rows(tensors(request, binary))
            asked = self.host.asked(headers) if any(s.canary for s in servers) else None
            answers = await group.answer(servers, rows, request.id, asked, version)
            variants = [a.variant for a in answers]
            status = 200
            answer, extra = encode_response(group, servers, answers, request)
        except (ProtocolError, ServingRefusal) as exc:
            status = exc.status
            answer, extra = error_body(str(exc)), []
            if group is not None:
                group.refuse(exc)
        except BodyTooLarge as exc:
            status, answer, extra = 413, exc.response(), []
            group.refuse(exc)
        except Exception:
            status, answer, extra = 500, error_body("scoring failed"), []
            log.exception("scoring failed")
        await respond(send, status, answer, extra or JSON_HEADERS)
        observed = servers or (group.servers if group is not None else ())
        for i, server in enumerate(observed):
            variant = variants[i] if i < len(variants) else UNROUTED
            server.request_metrics.observe(status, time.perf_counter() - started, variant, PROTOCOL)


def oip_routes(host: Host) -> list[BaseRoute]:
    def group_of(request: Request) -> ModelGroup:
        group = host.group(request.path_params["model"])
        version = request.path_params.get("version")
        if version is not None:
            group.version(version)
        return group

    def refused(exc: ProtocolError | ServingRefusal) -> JSONResponse:
        return JSONResponse({"error": str(exc)}, status_code=exc.status)

    async def live(_: Request) -> JSONResponse:
        return JSONResponse({"live": True})

    async def ready(_: Request) -> JSONResponse:
        ready = all(server.ready for server in host.servers.values())
        return JSONResponse({"ready": ready}, status_code=200 if ready else 503)

    async def server_metadata(_: Request) -> JSONResponse:
        return JSONResponse({"name": SERVER_NAME, "version": keiko.__version__, "extensions": ["binary_tensor_data"]})

    async def model_metadata(request: Request) -> JSONResponse:
        try:
            return JSONResponse(group_of(request).metadata())
        except (ProtocolError, ServingRefusal) as exc:
            return refused(exc)

    async def model_ready(request: Request) -> JSONResponse:
        try:
            group = group_of(request)
        except (ProtocolError, ServingRefusal) as exc:
            return refused(exc)
        ready = group.ready()
        return JSONResponse({"name": group.name, "ready": ready}, status_code=200 if ready else 503)

    routes = [Route("/v2/health/live", live), Route("/v2/health/ready", ready), Route("/v2", server_metadata)]
    for base in (MODEL_PATH, MODEL_PATH + VERSIONED):
        routes += [
            Route(base, model_metadata),
            Route(f"{base}/ready", model_ready),
            Route(f"{base}/infer", hot_path, methods=["POST"]),  # answered before routing; other methods: 405
        ]
    return routes
