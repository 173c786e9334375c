"""KServe's Open Inference Protocol proto, loaded into a descriptor pool of keiko's own.

open_inference_grpc.proto is the protocol's (kserve/open-inference-protocol, specification/protocol, commit
d49cc23); `make protos` compiles it into open_inference_grpc.binpb, a descriptor set (a test checks it is
current). Its message classes are built from that at import, in a private pool rather than protobuf's default
one: every implementation of the protocol defines the same `inference.*` names (tritonclient's service_pb2 among
them), and two of them in the default pool of one process fail with "duplicate symbol".
"""

from __future__ import annotations

from pathlib import Path

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
from google.protobuf.message import Message

DESCRIPTOR_SET = Path(__file__).with_name("open_inference_grpc.binpb")
SERVICE = "inference.GRPCInferenceService"

POOL = descriptor_pool.DescriptorPool()
for _file in descriptor_pb2.FileDescriptorSet.FromString(DESCRIPTOR_SET.read_bytes()).file:
    POOL.Add(_file)


def message(name: str) -> type[Message]:
    """The class of the protocol's message `name` (ModelInferRequest, ...)."""
    return message_factory.GetMessageClass(POOL.FindMessageTypeByName(f"inference.{name}"))


# Each RPC of the service: (request class, response class).
METHODS: dict[str, tuple[type[Message], type[Message]]] = {
    method.name: (message(method.input_type.name), message(method.output_type.name))
    for method in POOL.FindServiceByName(SERVICE).methods
}
