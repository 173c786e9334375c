"""The Open Inference Protocol (KServe V2), as keiko's model servers speak it: what REST and gRPC share.

KServe, Triton, MLServer and Seldon speak this protocol, so their clients (tritonclient, kserve's) call keiko
unchanged. A model's inputs are its feature module's INPUT_SCHEMA, one tensor per field (BYTES for strings and
timestamps in ISO 8601, INT64 for integers, FP64 for floats; FP32 and narrower integers are accepted too), plus
the prediction log's identifiers (user_id, which a canary routes by, and impression_id) as optional INT64
inputs. Its one output, FP64, is named after the model. A request carries any batch size: shape [n] or [n, 1].

Several models on the same rows: `ctr+cvr` names every model of the group (each hosted by this process). Its
inputs are the union of theirs, and it answers one output per model; each model routes, scores and logs the rows
as if asked alone. This is how one bid request gets every model's answer (as Triton's ensembles do it).

The transports (keiko.serving.oip_rest, .oip_grpc) decode their bodies into `Tensor`s; `rows_from_tensors`
turns them into /predict's rows, so every protocol goes through the same validation and the same scoring
(`ModelServer.adapter`, `.answer`) and gets the same answers.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from pydantic import ValidationError

from keiko.serving.limits import BodyTooLarge
from keiko.serving.model_server import Answer, ModelServer, PredictRequest, VersionNotServed, answer_all
from keiko.serving.prediction_log import IDENTIFIERS
from keiko.serving.validation import GOT_MAX_CHARS

GROUP_SEPARATOR = "+"
MODEL_PATH = "/v2/models/{model}"  # REST: a model's metadata; /ready, /infer below it
VERSIONED = "/versions/{version}"  # after MODEL_PATH: the same for one version
OUTPUT_DATATYPE = "FP64"
PLATFORM = "keiko"
SERVER_NAME = "keiko"
# The datatype a field of each kind is declared with in the model's metadata, then every one it accepts.
DATATYPES: dict[str, tuple[str, ...]] = {
    "int": ("INT64", "INT32", "INT16", "INT8", "UINT32", "UINT16", "UINT8"),
    "float": ("FP64", "FP32"),
    "str": ("BYTES",),
    "timestamp": ("BYTES",),
}
# Little-endian element types of the raw (binary) tensor encoding: gRPC's raw_input_contents, REST's binary
# extension. BYTES is each element's 4-byte length, then its bytes.
RAW_DTYPES = {
    "INT64": "<i8", "INT32": "<i4", "INT16": "<i2", "INT8": "<i1", "UINT64": "<u8", "UINT32": "<u4",
    "UINT16": "<u2", "UINT8": "<u1", "FP64": "<f8", "FP32": "<f4", "FP16": "<f2", "BOOL": "?",
}  # fmt: skip


class ProtocolError(ValueError):
    """A request the protocol refuses: REST answers `status` with {"error": message}; gRPC maps it to a code."""

    status = 400


class ModelNotFound(ProtocolError):
    status = 404


class TooManyRows(ProtocolError):
    status = 413


class NotReady(ProtocolError):
    status = 503


@dataclass(frozen=True)
class Tensor:
    """One input as a transport decoded it: `data` flat, in row-major order (a list or a numpy array)."""

    name: str
    datatype: str
    shape: Sequence[int]
    data: Any


def raw_tensor(name: str, datatype: str, shape: Sequence[int], raw: bytes) -> Tensor:
    """A tensor from the raw (binary) encoding."""
    if datatype == "BYTES":
        return Tensor(name, datatype, shape, _split_bytes(name, raw))
    dtype = RAW_DTYPES.get(datatype)
    if dtype is None:
        raise ProtocolError(f"input '{name}': unknown datatype {datatype}")
    if len(raw) % np.dtype(dtype).itemsize:
        raise ProtocolError(f"input '{name}': {len(raw)} bytes are not a whole number of {datatype} elements")
    return Tensor(name, datatype, shape, np.frombuffer(raw, dtype=dtype))


def _split_bytes(name: str, raw: bytes) -> list[bytes]:
    """BYTES elements of the raw encoding: each a 4-byte little-endian length, then that many bytes."""
    items, at = [], 0
    while at < len(raw):
        if at + 4 > len(raw):
            raise ProtocolError(f"input '{name}': BYTES data ends inside an element's length")
        (length,) = struct.unpack_from("<I", raw, at)
        at += 4
        if at + length > len(raw):
            raise ProtocolError(f"input '{name}': BYTES element {len(items)} runs past the end of the data")
        items.append(raw[at : at + length])
        at += length
    return items


def raw_scores(predictions: Sequence[float]) -> bytes:
    return np.asarray(predictions, dtype="<f8").tobytes()


class ModelGroup:
    """The models a request names: one hosted model, or several joined by '+' (`ctr+cvr`), each with its own
    fields; the group's inputs are the union of theirs (a field two models share has one kind)."""

    def __init__(self, name: str, servers: Sequence[ModelServer]) -> None:
        self.name = name
        self.servers = servers
        self.kinds: dict[str, str] = {}
        for server in servers:
            for field, kind in {**server.schema, **IDENTIFIERS}.items():
                if self.kinds.setdefault(field, kind) != kind:
                    raise ProtocolError(
                        f"{name}: input '{field}' is {kind} for {server.name} but {self.kinds[field]} for another"
                    )
        self.required = {field for server in servers for field in server.schema}

    @classmethod
    def resolve(cls, name: str, hosted: Mapping[str, ModelServer]) -> ModelGroup:
        names = name.split(GROUP_SEPARATOR)
        unknown = [n for n in names if n not in hosted]
        if unknown or len(set(names)) != len(names):
            what = f"model {', '.join(unknown)} is not" if unknown else f"{name} names a model twice:"
            raise ModelNotFound(
                f"{what} served here (models: {', '.join(hosted)}; several at once: {GROUP_SEPARATOR.join(hosted)})"
            )
        return cls(name, [hosted[n] for n in names])

    @property
    def single(self) -> ModelServer | None:
        return self.servers[0] if len(self.servers) == 1 else None

    @property
    def max_rows(self) -> int:
        return min(server.limits.max_rows for server in self.servers)

    @property
    def max_body_bytes(self) -> int:
        return min(server.limits.max_body_bytes for server in self.servers)

    def ready(self) -> bool:
        return all(server.ready for server in self.servers)

    def version(self, text: str) -> int:
        """The version a request names (the path's /versions/{v}, gRPC's model_version): one this model serves."""
        if self.single is None:
            raise ProtocolError(f"{self.name} is a group of models: a version names one model's")
        if not (text.isascii() and text.isdigit()):  # "²" is a digit to str.isdigit, not to int()
            raise VersionNotServed(f"version {text!r}: versions are numbers (1, 2, ...)")
        self.single.served_version(int(text))
        return int(text)

    def refuse(self, exc: ProtocolError | VersionNotServed | BodyTooLarge) -> None:
        """Count a refused request on the models it named (keiko_serving_refused_requests_total)."""
        if exc.status not in (400, 413):
            return  # no such model or version, not ready: nothing wrong with the request itself
        reason = {BodyTooLarge: "body_too_large", TooManyRows: "too_many_rows"}.get(type(exc), "invalid_request")
        for server in self.servers:
            server.refused[reason] += 1

    def metadata(self) -> dict[str, Any]:
        """The model's (or group's) metadata: its inputs with their datatypes, one output per model."""
        single = self.single
        versions = []
        if single is not None and single.version is not None:
            versions = [str(single.version)]
            if single.canary is not None:
                versions.append(str(single.canary.model.version))
        return {
            "name": self.name,
            "versions": versions,
            "platform": PLATFORM,
            "inputs": [{"name": f, "datatype": DATATYPES[kind][0], "shape": [-1]} for f, kind in self.kinds.items()],
            "outputs": [{"name": s.name, "datatype": OUTPUT_DATATYPE, "shape": [-1]} for s in self.servers],
        }

    def outputs(self, requested: Iterable[str] | None) -> list[ModelServer]:
        """The models whose outputs a request asks for (all when it names none)."""
        requested = list(requested or ())
        if not requested:
            return list(self.servers)
        by_name = {s.name: s for s in self.servers}
        chosen = []
        for name in requested:
            if name not in by_name:
                raise ProtocolError(f"unknown output '{name}': {self.name} outputs {', '.join(by_name)}")
            if by_name[name] in chosen:
                raise ProtocolError(f"output '{name}' is asked for twice")
            chosen.append(by_name[name])
        return chosen

    def rows(self, tensors: Sequence[Tensor]) -> list[dict[str, Any]]:
        return rows_from_tensors(tensors, self.kinds, self.required, self.max_rows)

    async def answer(
        self,
        servers: Sequence[ModelServer],
        rows: list[dict[str, Any]],
        request_id: str | None,
        asked: str | None = None,
        version: int | None = None,
    ) -> list[Answer]:
        """Each model's answer on `rows`, after each model validated them as /predict would."""
        for server in servers:
            if not server.ready:
                raise NotReady(f"{server.name}: {server.last_error or 'loading'}")
        return await answer_all(servers, [validated(server, rows, request_id) for server in servers], asked, version)


def validated(server: ModelServer, rows: list[dict[str, Any]], request_id: str | None) -> PredictRequest:
    request: PredictRequest = {"rows": rows}
    if request_id:
        request["request_id"] = request_id
    try:
        return server.adapter.validate_python(request)
    except ValidationError as exc:
        raise ProtocolError(f"{server.name}: {describe_validation(exc)}") from None


def describe_validation(exc: ValidationError, limit: int = 5) -> str:
    """pydantic's errors on rows, named as the protocol names them: input and element."""
    parts = []
    for error in exc.errors()[:limit]:
        loc = list(error["loc"])
        if len(loc) >= 3 and loc[0] == "rows":
            where = f"input '{'.'.join(str(p) for p in loc[2:])}' element {loc[1]}"
        else:
            where = ".".join(str(p) for p in loc) or "request"
        got = error.get("input")
        if isinstance(got, str) and len(got) > GOT_MAX_CHARS:
            got = f"{got[:GOT_MAX_CHARS]}... ({len(got):,} characters)"
        shown = f" (got {got!r})" if isinstance(got, str | int | float) and not isinstance(got, bool) else ""
        parts.append(f"{where}: {error['msg']}{shown}")
    more = len(exc.errors()) - limit
    return "; ".join(parts) + (f"; and {more} more" if more > 0 else "")


def rows_from_tensors(
    tensors: Sequence[Tensor], kinds: Mapping[str, str], required: set[str], max_rows: int
) -> list[dict[str, Any]]:
    """/predict's rows from one tensor per input; ProtocolError naming the input for anything wrong."""
    seen: set[str] = set()
    columns: dict[str, list[Any]] = {}
    batch: tuple[str, int] | None = None
    for tensor in tensors:
        name = tensor.name
        if name in seen:
            raise ProtocolError(f"input '{name}' is given twice")
        seen.add(name)
        kind = kinds.get(name)
        if kind is None:
            raise ProtocolError(f"unknown input '{name}': the inputs are {', '.join(kinds)}")
        if tensor.datatype not in DATATYPES[kind]:
            raise ProtocolError(
                f"input '{name}' is {tensor.datatype}: a {kind} field takes {' or '.join(DATATYPES[kind])}"
            )
        rows = batch_size(name, tensor.shape)
        values = _values(tensor, kind)
        if len(values) != math.prod(tensor.shape):
            raise ProtocolError(f"input '{name}' holds {len(values)} elements for shape {list(tensor.shape)}")
        if batch is None:
            batch = (name, rows)
        elif rows != batch[1]:
            raise ProtocolError(f"input '{name}' has {rows} rows but '{batch[0]}' has {batch[1]}")
        columns[name] = values
    missing = sorted(required - seen)
    if missing:
        raise ProtocolError(f"missing input{'s' if len(missing) > 1 else ''} {', '.join(repr(m) for m in missing)}")
    if batch is None or batch[1] == 0:
        raise ProtocolError("no rows: every input's shape is [0]")
    if batch[1] > max_rows:
        raise TooManyRows(f"too many rows: {batch[1]:,} in one request; at most {max_rows:,} (serving.max_rows)")
    names = list(columns)
    return [dict(zip(names, row, strict=True)) for row in zip(*columns.values(), strict=True)]


def batch_size(name: str, shape: Sequence[int]) -> int:
    """Rows of a [n] or [n, 1] input."""
    if not 1 <= len(shape) <= 2 or (len(shape) == 2 and shape[1] != 1) or any(d < 0 for d in shape):
        raise ProtocolError(f"input '{name}' has shape {list(shape)}: expected [n] or [n, 1], one element a row")
    return shape[0]


def _values(tensor: Tensor, kind: str) -> list[Any]:
    """Python values of a tensor's elements: str for BYTES (UTF-8), int or float for numbers."""
    data = tensor.data
    if isinstance(data, np.ndarray):
        return data.tolist()
    if data and isinstance(data[0], list):  # the natural [[a], [b]] form of an [n, 1] input
        data = [item for inner in data for item in (inner if isinstance(inner, list) else [inner])]
    if kind in ("str", "timestamp"):
        return [_text(tensor.name, i, v) for i, v in enumerate(data)]
    return list(data)


def _text(name: str, index: int, value: Any) -> Any:
    if isinstance(value, bytes | bytearray):
        try:
            return value.decode()
        except UnicodeDecodeError:
            raise ProtocolError(f"input '{name}' element {index}: not UTF-8 text") from None
    return value  # a str, or something validation will name
