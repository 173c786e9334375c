"""Load for an Open Inference Protocol gRPC server: unary `inference.GRPCInferenceService/ModelInfer` from h2load.

h2load (Debian's nghttp2-client: `apt-get install -y nghttp2-client`) speaks HTTP/2 cleartext with prior
knowledge and posts one file as every request's body, so a gRPC call is that file holding one gRPC message (a
1-byte compressed flag 0, the 4-byte big-endian length, the serialized ModelInferRequest) posted with
`content-type: application/grpc` and `te: trailers` to the method's path (h2load adds content-length,
user-agent and accept-encoding, which grpcio servers ignore). It is a C load generator like wrk, one event-loop
thread per process, so the load takes as little of the two cores from the servers as wrk's does for /predict
(ghz is not packaged by Debian, and a Python grpc.aio client would spend the same Python per call as a server).

What h2load cannot do, and what is done instead:

* it reads only the HTTP status, which a gRPC server sends as 200 before it knows the outcome: grpc-status is
  in the trailers and h2load never looks at it. So a run is only valid after check() made the same call with
  grpcio and got grpc-status OK (and the answer it was to give). Its error count is what it does see:
  failed and errored streams, timeouts and non-2xx statuses.
* it sends the same body every time (no Lua script cycling rows as with wrk): each run sends one request,
  over and over (drive() takes one body file for all targets, or one per target). For ctr's row scorer that
  is a cache hit on every slot after the first request, as it is with wrk's 500 cycled rows after one cycle.
* it prints no percentiles (only min, max, mean and sd of "time for request"). With --log-file it writes one
  line per request (start time in us since the epoch, HTTP status, us from the request's start to the end of
  its response, trailers included), and drive() takes p50/p95/p99 from those lines: the requests of the
  measured period (h2load logs none of the warm-up), the nearest-rank percentile of the completed ones.

    from grpc_load import check, drive, infer_request, write_body
    request = infer_request("ctr", [row], features.INPUT_SCHEMA)
    check("127.0.0.1", 8721, request)                      # grpc-status OK, or SystemExit
    body = write_body(request, home / "ctr.grpc")
    drive([("127.0.0.1", 8721), ("127.0.0.1", 8722)], body, seconds=20, connections=16, streams=1)
"""

from __future__ import annotations

import math
import re
import shutil
import struct
import subprocess
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from mlserver_peer import oip_value

METHOD = "/inference.GRPCInferenceService/ModelInfer"
HEADERS = ("content-type: application/grpc", "te: trailers")
# INPUT_SCHEMA's kinds as OIP tensors: (datatype, the InferTensorContents field holding them).
TENSORS = {
    "str": ("BYTES", "bytes_contents"),
    "timestamp": ("BYTES", "bytes_contents"),  # ISO 8601, as keiko's /predict JSON and mlserver_peer.oip_body
    "int": ("INT64", "int64_contents"),
    "float": ("FP64", "fp64_contents"),
}
_FINISHED = re.compile(r"^finished in ([0-9.]+)(m?s), ([0-9.]+) req/s", re.MULTILINE)
_REQUESTS = re.compile(
    r"^requests: (\d+) total, (\d+) started, (\d+) done, (\d+) succeeded, (\d+) failed, (\d+) errored, (\d+) timeout",
    re.MULTILINE,
)
_STATUS = re.compile(r"^status codes: (\d+) 2xx, (\d+) 3xx, (\d+) 4xx, (\d+) 5xx", re.MULTILINE)


def _element(value: Any, kind: str) -> Any:
    """A row's value as a gRPC tensor holds it: what the REST body holds (mlserver_peer.oip_value), text as bytes."""
    value = oip_value(value, kind)
    return str(value).encode() if kind in ("str", "timestamp") else value


def infer_request(
    model_name: str,
    rows: Sequence[Mapping[str, Any]],
    schema: Mapping[str, str],
    extra: Mapping[str, str] | None = None,
) -> Any:
    """A ModelInferRequest for `rows`: the gRPC twin of mlserver_peer.oip_body (same tensors, same order; the
    output named `model_name` asked for). tritonclient's service_pb2 is wire-compatible with KServe's
    open_inference_grpc.proto (same package `inference`, same field numbers)."""
    from tritonclient.grpc import service_pb2

    request = service_pb2.ModelInferRequest(model_name=model_name)
    for name, kind in {**schema, **(extra or {})}.items():
        datatype, field = TENSORS[kind]
        tensor = request.inputs.add(name=name, datatype=datatype, shape=[len(rows)])
        getattr(tensor.contents, field).extend(_element(row[name], kind) for row in rows)
    request.outputs.add(name=model_name)
    return request


def grpc_frame(request: Any) -> bytes:
    """One gRPC length-prefixed message: uncompressed (flag 0), 4-byte big-endian length, the message."""
    message = request.SerializeToString()
    return struct.pack(">BI", 0, len(message)) + message


def write_body(request: Any, path: Path) -> Path:
    """The file h2load posts: one gRPC message of `request`."""
    path.write_bytes(grpc_frame(request))
    return path


def _call(host: str, port: int, request: Any, timeout: float) -> Any:
    """One ModelInfer call with grpcio (tritonclient's stub): its response, or grpc.RpcError with the status."""
    import grpc
    from tritonclient.grpc import service_pb2_grpc

    with grpc.insecure_channel(f"{host}:{port}") as channel:
        return service_pb2_grpc.GRPCInferenceServiceStub(channel).ModelInfer(request, timeout=timeout)


def check(host: str, port: int, request: Any, timeout: float = 10.0) -> Any:
    """One real ModelInfer call; its response if grpc-status is OK, else SystemExit naming the status.

    Run before load: h2load counts a 200 with grpc-status INVALID_ARGUMENT in the trailers as a success."""
    import grpc

    try:
        return _call(host, port, request, timeout)
    except grpc.RpcError as exc:
        raise SystemExit(f"ModelInfer at {host}:{port}: grpc-status {exc.code().name}: {exc.details()}") from None


def wait_ready(host: str, port: int, request: Any, seconds: float = 120.0) -> Any:
    """check() once the server answers: a server still starting answers UNAVAILABLE (nothing listening yet),
    which is waited out for up to `seconds`; any other status is final."""
    import grpc

    deadline = time.monotonic() + seconds
    while True:
        try:
            return _call(host, port, request, timeout=10.0)
        except grpc.RpcError as exc:
            if exc.code() != grpc.StatusCode.UNAVAILABLE or time.monotonic() > deadline:
                return check(host, port, request)
        time.sleep(0.5)


def h2load_command(
    host: str, port: int, body_file: Path, seconds: int, connections: int, streams: int, log: Path, warmup: int = 0
) -> list[str]:
    """One h2load process (one thread) against one target: `connections` HTTP/2 connections, `streams`
    concurrent calls on each, for `seconds` after `warmup` unmeasured seconds."""
    command = ["h2load", "-t1", f"-c{connections}", f"-m{streams}", f"-D{seconds}", "-d", str(body_file)]
    if warmup:
        command.append(f"--warm-up-time={warmup}")
    for header in HEADERS:
        command += ["-H", header]
    return [*command, f"--log-file={log}", f"http://{host}:{port}{METHOD}"]


def percentile(ordered: Sequence[float], p: float) -> float:
    """Nearest-rank percentile of ascending values (NaN for none)."""
    if not ordered:
        return math.nan
    return ordered[max(0, math.ceil(p / 100 * len(ordered)) - 1)]


def latencies_ms(log: Path) -> list[float]:
    """Ascending latencies (ms) of the requests h2load's --log-file records with an HTTP status (-1: failed)."""
    values = []
    for line in log.read_text().splitlines():
        fields = line.split("\t")
        if len(fields) >= 3 and fields[1] != "-1":
            values.append(int(fields[2]) / 1000)
    return sorted(values)


def parse_summary(out: str, warmup: int = 0) -> dict[str, float]:
    """requests done, measured seconds and errors from h2load's summary (failed, errored and timed-out streams,
    and answers other than 2xx).

    Its counts are of the measured period only, but "finished in" includes the warm-up; its req/s is done over
    the measured duration, so that duration is done / req/s (the wall time less the warm-up when none is done).
    """
    finished, requests, status = _FINISHED.search(out), _REQUESTS.search(out), _STATUS.search(out)
    if not (finished and requests and status):
        raise ValueError(f"not an h2load summary:\n{out}")
    _, _, done, _, failed, errored, timeout = map(int, requests.groups())
    rps = float(finished[3])
    seconds = done / rps if done and rps else float(finished[1]) / (1000 if finished[2] == "ms" else 1) - warmup
    non_2xx = sum(map(int, status.groups()[1:]))
    return {"requests": done, "seconds": seconds, "errors": failed + errored + timeout + non_2xx}


def drive(
    targets: list[tuple[str, int]],
    body_file: Path | list[Path],
    seconds: int,
    connections: int,
    streams: int,
    warmup: int = 0,
) -> list[dict[str, float]]:
    """One h2load per target, all at once; per target: requests, seconds, errors, p50_ms, p95_ms, p99_ms
    (percentiles from the --log-file lines: see the module's docstring). `body_file`: one for all targets,
    or one per target."""
    if shutil.which("h2load") is None:
        raise SystemExit("h2load is not installed: `apt-get install -y nghttp2-client`")
    bodies = body_file if isinstance(body_file, list) else [body_file] * len(targets)
    with tempfile.TemporaryDirectory(prefix="keiko-h2load-") as tmp:
        logs = [Path(tmp) / f"{i}.log" for i in range(len(targets))]
        runs = [
            subprocess.Popen(
                h2load_command(host, port, body, seconds, connections, streams, log, warmup),
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
            )
            for (host, port), body, log in zip(targets, bodies, logs, strict=True)
        ]
        summaries = []
        for run, log in zip(runs, logs, strict=True):
            out, _ = run.communicate()
            if run.returncode != 0:
                raise SystemExit(f"h2load failed:\n{out}")
            summary = parse_summary(out, warmup)
            if not summary["requests"]:  # h2load says nothing of a refused connection or a failed h2c preface
                raise SystemExit(f"h2load completed no request against {run.args[-1]}: is an h2c server there?\n{out}")
            ordered = latencies_ms(log)
            summary.update({f"p{p}_ms": percentile(ordered, p) for p in (50, 95, 99)})
            summaries.append(summary)
    return summaries
