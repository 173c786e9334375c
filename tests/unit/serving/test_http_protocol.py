"""/predict answered in the HTTP protocol without an ASGI cycle: the same answers as through ASGI, byte for byte
but the date, and everything the fast path does not take still answered by uvicorn's cycle."""

from __future__ import annotations

import json
import socket
from typing import ClassVar

import pyarrow.parquet as pq
import pytest

from conftest import DS, serve_in_thread
from keiko.rollout import json_rows
from keiko.serving.app import create_app
from keiko.serving.http_protocol import KeikoHttpProtocol
from keiko.serving.http_write import OneWriteHttpToolsProtocol

pytestmark = pytest.mark.server


class CountingProtocol(KeikoHttpProtocol):
    """Counts the responses written without ASGI."""

    without_asgi: ClassVar[int] = 0

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        # `keiko serve` runs without an access log (which sends every request through ASGI); under pytest, its
        # log capture gives uvicorn's access logger a handler whatever the config says.
        self.access_log = False

    def _write(self, hot, reply):
        CountingProtocol.without_asgi += 1
        super()._write(hot, reply)


@pytest.fixture
def servers(run_home):
    """ctr v1 under keiko's protocol and under the one-write protocol alone (every request through ASGI)."""
    fast_app, asgi_app = create_app("ctr", load_production=False), create_app("ctr", load_production=False)
    with (
        serve_in_thread(fast_app, http=CountingProtocol) as fast,
        serve_in_thread(asgi_app, http=OneWriteHttpToolsProtocol) as asgi,
    ):
        fast_app.state.server.load(1)
        asgi_app.state.server.load(1)
        yield {"fast": fast, "asgi": asgi}, fast_app


@pytest.fixture
def golden_rows(run_home):
    golden = pq.read_table(run_home / "artifacts" / "ctr" / DS / "golden.parquet")
    return json_rows(golden.drop_columns(["impression_id", "expected_prediction"]))


def exchange(url: str, raw: bytes, responses: int = 1) -> list[bytes]:
    """Send `raw` on one connection; the `responses` it gets back, each head and body, the date line dropped."""
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(raw)
        data = b""
        found: list[bytes] = []
        while len(found) < responses:
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
            while b"\r\n\r\n" in data:
                head, rest = data.split(b"\r\n\r\n", 1)
                length = next(
                    int(line.split(b":")[1])
                    for line in head.split(b"\r\n")
                    if line.lower().startswith(b"content-length")
                )
                if len(rest) < length:
                    break
                lines = [line for line in head.split(b"\r\n") if not line.lower().startswith(b"date:")]
                found.append(b"\r\n".join(lines) + b"\r\n\r\n" + rest[:length])
                data = rest[length:]
        return found


def post(path: str, body: bytes, *headers: str, version: str = "1.1") -> bytes:
    extra = "".join(f"{h}\r\n" for h in headers)
    head = f"POST {path} HTTP/{version}\r\nhost: test\r\ncontent-type: application/json\r\n{extra}"
    return head.encode() + f"content-length: {len(body)}\r\n\r\n".encode() + body


def body(rows: list[dict]) -> bytes:
    return json.dumps({"rows": rows}).encode()


def test_predict_answers_without_asgi_exactly_as_through_it(servers, golden_rows):
    urls, _ = servers
    cases = [
        post("/predict", body(golden_rows[:1])),
        post("/models/ctr/predict", body(golden_rows[1:2])),
        post("/predict?debug=1", body(golden_rows[2:5])),
        post("/predict", body([{"app_id": "not a number"}])),  # 422, naming the fields
        post("/predict", b"{not json"),
        post("/predict", body(golden_rows[:1]), version="1.0"),  # answered, then closed
        post("/predict", body(golden_rows[:1]), "connection: close"),
    ]
    before = CountingProtocol.without_asgi
    for raw in cases:
        fast, asgi = exchange(urls["fast"], raw), exchange(urls["asgi"], raw)
        assert fast == asgi and fast, raw
    assert CountingProtocol.without_asgi - before == len(cases)
    closing = exchange(urls["fast"], post("/predict", body(golden_rows[:1]), "connection: close"))[0]
    assert b"connection: close" in closing


def test_requests_the_fast_path_does_not_take_are_answered_through_asgi_the_same(servers, golden_rows):
    urls, _ = servers
    chunked = (
        b"POST /predict HTTP/1.1\r\nhost: test\r\ncontent-type: application/json\r\ntransfer-encoding: chunked\r\n\r\n"
    )
    payload = body(golden_rows[:1])
    cases = [
        chunked + f"{len(payload):x}\r\n".encode() + payload + b"\r\n0\r\n\r\n",
        post("/models/nope/predict", payload),  # 404 naming what is hosted
        post("/predict", b"x" * 2_000_000),  # 413 before the body is read (serving.max_body_bytes)
        post("/predict", body(golden_rows[:80])),  # more rows than the row path takes: a vectorised call
        b"GET /version HTTP/1.1\r\nhost: test\r\n\r\n",
    ]
    before = CountingProtocol.without_asgi
    for raw in cases:
        fast, asgi = exchange(urls["fast"], raw), exchange(urls["asgi"], raw)
        if raw.startswith(b"GET /version"):  # loaded_at differs between the two servers
            assert fast[0].split(b"\r\n")[0] == asgi[0].split(b"\r\n")[0] == b"HTTP/1.1 200 OK"
            continue
        assert fast == asgi and fast, raw[:80]
    assert CountingProtocol.without_asgi == before
    eighty = json.loads(exchange(urls["fast"], cases[3])[0].split(b"\r\n\r\n", 1)[1])
    assert len(eighty["predictions"]) == 80


def test_keep_alive_and_pipelined_requests_are_answered_in_order(servers, golden_rows):
    urls, _ = servers
    requests = [post("/predict", body([row])) for row in golden_rows[:3]]
    chunked = b"POST /predict HTTP/1.1\r\nhost: test\r\ntransfer-encoding: chunked\r\n\r\n"
    payload = body(golden_rows[3:4])
    through_asgi = chunked + f"{len(payload):x}\r\n".encode() + payload + b"\r\n0\r\n\r\n"
    # Four requests in one packet: the third goes through ASGI, those after it wait for its answer.
    sent = requests[0] + requests[1] + through_asgi + requests[2]
    fast, asgi = exchange(urls["fast"], sent, responses=4), exchange(urls["asgi"], sent, responses=4)
    assert fast == asgi and len(fast) == 4
    predictions = [json.loads(r.split(b"\r\n\r\n", 1)[1])["predictions"][0] for r in fast]
    singles = [
        json.loads(exchange(urls["asgi"], post("/predict", body([row])))[0].split(b"\r\n\r\n", 1)[1])["predictions"][0]
        for row in [*golden_rows[:2], golden_rows[3], golden_rows[2]]
    ]
    assert predictions == singles


def test_answers_without_asgi_are_counted_and_logged_as_through_it(servers, golden_rows):
    urls, app = servers
    server = app.state.server
    logged = server.prediction_log.counters.rows_logged
    for row in golden_rows[:5]:
        exchange(urls["fast"], post("/predict", body([row])))
    exchange(urls["fast"], post("/predict", body([{"app_id": 1}])))
    assert server.prediction_log.counters.rows_logged - logged == 5
    metrics = exchange(urls["fast"], b"GET /metrics HTTP/1.1\r\nhost: test\r\n\r\n")[0].decode()
    assert 'keiko_serving_requests_total{model="ctr",protocol="predict",status="200",variant="stable"}' in metrics
    assert 'keiko_serving_requests_total{model="ctr",protocol="predict",status="422",variant="unrouted"}' in metrics
