"""The Open Inference Protocol over gRPC: `inference.GRPCInferenceService` (keiko.serving.protos, KServe's proto).

It runs in the model server's own process and event loop (grpc.aio beside uvicorn), on its own port, over the same
hosted models: a request is routed, validated, scored and logged as over REST (keiko.serving.inference_protocol),
so a canary, gate_serving's known answers and the prediction log see no difference. Inputs come in
`raw_input_contents` (what tritonclient sends) or in typed `contents`; outputs go in `raw_output_contents`, as
Triton answers and tritonclient reads them. A refused request ends with INVALID_ARGUMENT (the message names the
input), NOT_FOUND (no such model or version), UNAVAILABLE (not loaded yet) or INTERNAL.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence

import grpc

import keiko
from keiko.serving.app import UNROUTED, Host
from keiko.serving.auth import VARIANT_HEADER, asked_variant
from keiko.serving.inference_protocol import (
    OUTPUT_DATATYPE,
    PLATFORM,
    SERVER_NAME,
    ModelGroup,
    ProtocolError,
    Tensor,
    raw_scores,
    raw_tensor,
)
from keiko.serving.model_server import Answer, ModelServer, VersionNotServed
from keiko.serving.protos import METHODS, SERVICE, message

log = logging.getLogger("keiko.serving")
ModelInferRequest, ModelInferResponse = METHODS["ModelInfer"]
ServerLiveResponse, ServerReadyResponse, ServerMetadataResponse, ModelReadyResponse, ModelMetadataResponse = (
    METHODS[name][1] for name in ("ServerLive", "ServerReady", "ServerMetadata", "ModelReady", "ModelMetadata")
)
TensorMetadata = message("ModelMetadataResponse.TensorMetadata")
PROTOCOL = "v2_grpc"  # /metrics' protocol label
# The code of each refusal, by the HTTP status REST answers it with (which /metrics counts for gRPC too).
CODES = {400: grpc.StatusCode.INVALID_ARGUMENT, 404: grpc.StatusCode.NOT_FOUND, 413: grpc.StatusCode.INVALID_ARGUMENT,
         503: grpc.StatusCode.UNAVAILABLE}  # fmt: skip
# The typed `contents` field that holds each datatype's elements.
CONTENTS = {
    "BOOL": "bool_contents", "INT8": "int_contents", "INT16": "int_contents", "INT32": "int_contents",
    "INT64": "int64_contents", "UINT8": "uint_contents", "UINT16": "uint_contents", "UINT32": "uint_contents",
    "UINT64": "uint64_contents", "FP32": "fp32_contents", "FP64": "fp64_contents", "BYTES": "bytes_contents",
}  # fmt: skip


def request_tensors(request: ModelInferRequest) -> list[Tensor]:
    raw = request.raw_input_contents
    if raw and len(raw) != len(request.inputs):
        raise ProtocolError(f"{len(raw)} raw_input_contents for {len(request.inputs)} inputs: one each, or none")
    decoded = []
    for i, item in enumerate(request.inputs):
        if raw:
            decoded.append(raw_tensor(item.name, item.datatype, list(item.shape), raw[i]))
            continue
        field = CONTENTS.get(item.datatype)
        if field is None:
            raise ProtocolError(f"input '{item.name}': unknown datatype {item.datatype}")
        decoded.append(Tensor(item.name, item.datatype, list(item.shape), list(getattr(item.contents, field))))
    return decoded


def infer_response(
    group: ModelGroup, servers: Sequence[ModelServer], answers: Sequence[Answer], request_id: str
) -> ModelInferResponse:
    response = ModelInferResponse(model_name=group.name, id=request_id)
    if group.single is not None:
        response.model_version = str(answers[0].version)
        response.parameters["variant"].string_param = answers[0].variant
    for server, answer in zip(servers, answers, strict=True):
        output = response.outputs.add(name=server.name, datatype=OUTPUT_DATATYPE, shape=[len(answer.predictions)])
        output.parameters["model_version"].int64_param = answer.version
        output.parameters["variant"].string_param = answer.variant
        response.raw_output_contents.append(raw_scores(answer.predictions))
    return response


class InferenceService:
    """The protocol's RPCs, named as its proto names them."""

    def __init__(self, host: Host) -> None:
        self.host = host

    def _group(self, name: str, version: str = "") -> tuple[ModelGroup, int | None]:
        group = self.host.group(name)
        return group, group.version(version) if version else None

    async def ServerLive(self, request, context):
        return ServerLiveResponse(live=True)

    async def ServerReady(self, request, context):
        return ServerReadyResponse(ready=all(s.ready for s in self.host.servers.values()))

    async def ServerMetadata(self, request, context):
        return ServerMetadataResponse(name=SERVER_NAME, version=keiko.__version__)

    async def ModelReady(self, request, context):
        try:
            return ModelReadyResponse(ready=self._group(request.name, request.version)[0].ready())
        except (ProtocolError, VersionNotServed) as exc:
            await abort(context, exc)

    async def ModelMetadata(self, request, context) -> ModelMetadataResponse:
        try:
            metadata = self._group(request.name, request.version)[0].metadata()
        except (ProtocolError, VersionNotServed) as exc:
            await abort(context, exc)
        return ModelMetadataResponse(
            name=metadata["name"],
            versions=metadata["versions"],
            platform=PLATFORM,
            inputs=[TensorMetadata(**t) for t in metadata["inputs"]],
            outputs=[TensorMetadata(**t) for t in metadata["outputs"]],
        )

    async def ModelInfer(self, request, context) -> ModelInferResponse:
        started = time.perf_counter()
        group: ModelGroup | None = None
        servers: Sequence[ModelServer] = ()
        try:
            group, version = self._group(request.model_name, request.model_version)
            servers = group.outputs(o.name for o in request.outputs)
            rows = group.rows(request_tensors(request))
            asked = self.asked(context) if any(s.canary for s in servers) else None
            answers = await group.answer(servers, rows, request.id or None, asked, version)
        except (ProtocolError, VersionNotServed) as exc:
            if group is not None:
                group.refuse(exc)
            observe(servers or (group.servers if group else ()), exc.status, started)
            await abort(context, exc)
        except Exception:
            log.exception("scoring failed")
            observe(servers, 500, started)
            await context.abort(grpc.StatusCode.INTERNAL, "scoring failed")
        for server, answer in zip(servers, answers, strict=True):
            server.request_metrics.observe(200, time.perf_counter() - started, answer.variant, PROTOCOL)
        return infer_response(group, servers, answers, request.id)

    def asked(self, context: grpc.aio.ServicerContext) -> str | None:
        metadata = dict(context.invocation_metadata() or ())
        asked = metadata.get(VARIANT_HEADER)
        if asked is None:
            return None
        return asked_variant(asked, metadata.get("authorization", ""), self.host.admin_token)


def observe(servers: Sequence[ModelServer], status: int, started: float) -> None:
    """Count a refused request as the HTTP status of the same meaning (/metrics)."""
    for server in servers:
        server.request_metrics.observe(status, time.perf_counter() - started, UNROUTED, PROTOCOL)


async def abort(context: grpc.aio.ServicerContext, exc: ProtocolError | VersionNotServed) -> None:
    await context.abort(CODES[exc.status], str(exc))


async def start_grpc(host: Host, port: int, address: str = "127.0.0.1") -> tuple[grpc.aio.Server, int]:
    """Serve `host`'s models on `address:port` (0: a free port); (the server, its port)."""
    max_bytes = max(server.limits.max_body_bytes for server in host.servers.values())
    server = grpc.aio.server(options=[("grpc.max_receive_message_length", max_bytes)])
    service = InferenceService(host)
    handlers = {
        name: grpc.unary_unary_rpc_method_handler(
            getattr(service, name),
            request_deserializer=request.FromString,
            response_serializer=response.SerializeToString,
        )
        for name, (request, response) in METHODS.items()
    }
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE, handlers),))
    bound = server.add_insecure_port(f"{address}:{port}")
    if bound == 0:
        raise OSError(f"gRPC: cannot listen on {address}:{port}")
    await server.start()
    log.info("inference protocol over gRPC on %s:%s", address, bound)
    return server, bound
