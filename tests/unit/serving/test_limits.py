"""Request bodies are bounded: refused with 413 before they are read (declared length) or at the limit
(chunked), never held whole, and a refused 50 MB body does not hold up anyone else's request."""

import asyncio
import json
import socket
from contextlib import closing

import httpx
import pytest

from conftest import serve_in_thread
from keiko.serving.app import create_app
from keiko.serving.limits import BodyTooLarge, read_body

MB = 1 << 20
BIG = 50 * MB


def scope(content_length: int | None = None) -> dict:
    headers = [(b"host", b"x"), (b"content-type", b"application/json")]
    if content_length is not None:
        headers.append((b"content-length", str(content_length).encode()))
    return {"type": "http", "headers": headers}


class Body:
    """An ASGI receive() for a body of `chunks` chunks of `size` bytes; counts what was taken from it."""

    def __init__(self, chunks: int, size: int = 64 * 1024) -> None:
        self.chunks, self.size, self.taken = chunks, size, 0

    async def __call__(self) -> dict:
        self.taken += 1
        return {"type": "http.request", "body": b"x" * self.size, "more_body": self.taken < self.chunks}


def test_a_declared_length_over_the_limit_is_refused_before_anything_is_read():
    body = Body(chunks=800)  # 50 MB
    with pytest.raises(BodyTooLarge, match=r"52,428,800 bytes; at most 1,048,576 bytes \(serving.max_body_bytes\)"):
        asyncio.run(read_body(scope(content_length=BIG), body, limit=MB))
    assert body.taken == 0


def test_a_chunked_body_is_refused_at_the_limit_and_the_rest_is_never_taken():
    body = Body(chunks=800)  # 50 MB without a Content-Length
    with pytest.raises(BodyTooLarge, match=r"more than 1,048,576 bytes"):
        asyncio.run(read_body(scope(), body, limit=MB))
    assert body.taken == MB // body.size + 1  # the chunk that crossed the limit, and not one more


def test_a_body_within_the_limit_is_read_whole():
    assert asyncio.run(read_body(scope(), Body(chunks=16), limit=MB)) == b"x" * MB
    assert asyncio.run(read_body(scope(content_length=MB), Body(chunks=16), limit=MB)) == b"x" * MB


# --- on a real server (uvicorn on loopback, as `keiko serve` runs it) ---------------------------------


@pytest.fixture
def ctr_app(run_home):
    app = create_app("ctr", load_production=False)
    app.state.server.load(1)
    return app


def connect(url: str) -> socket.socket:
    host, port = url.removeprefix("http://").split(":")
    sock = socket.create_connection((host, int(port)))
    sock.settimeout(60)  # a hang guard, not a timing assertion
    return sock


def read_response(sock: socket.socket) -> tuple[int, dict]:
    """Status and JSON body of one HTTP/1.1 response with a Content-Length."""
    data = b""
    while b"\r\n\r\n" not in data:
        data += sock.recv(65536) or pytest.fail(f"connection closed after {data!r}")
    head, _, rest = data.partition(b"\r\n\r\n")
    lines = head.decode().split("\r\n")
    length = next(int(line.split(":")[1]) for line in lines[1:] if line.lower().startswith("content-length:"))
    while len(rest) < length:
        rest += sock.recv(65536) or pytest.fail("connection closed mid-response")
    return int(lines[0].split()[1]), json.loads(rest[:length])


def request_head(length: int | None) -> bytes:
    framing = f"Content-Length: {length}" if length is not None else "Transfer-Encoding: chunked"
    return f"POST /predict HTTP/1.1\r\nHost: keiko\r\nContent-Type: application/json\r\n{framing}\r\n\r\n".encode()


@pytest.mark.server
@pytest.mark.parametrize("http", ["httptools", "h11"])  # keiko serve runs httptools; h11 is uvicorn's other
def test_50_mb_bodies_get_413_while_a_one_row_request_is_answered(ctr_app, one_row, http):
    with serve_in_thread(ctr_app, http=http) as url:
        # Four 50 MB requests, each with its first megabyte sent and 49 to go.
        big = [connect(url) for _ in range(4)]
        for sock in big:
            sock.sendall(request_head(BIG) + b'{"rows": [' + b" " * (MB - 10))

        # While all four are still being sent, a one-row request on its own connection is answered.
        answer = httpx.post(f"{url}/predict", json={"rows": one_row}, timeout=60)
        assert answer.status_code == 200 and len(answer.json()["predictions"]) == 1

        # Each big one was refused from its Content-Length alone: the 413 is there before its body is.
        for sock in big:
            status, error = read_response(sock)
            assert status == 413
            assert error == {
                "error": "request body too large: 52,428,800 bytes; at most 1,048,576 bytes (serving.max_body_bytes)",
                "max_body_bytes": 1_048_576,
            }

        # The rest of a refused body is read and dropped, and its connection then serves the next request.
        with closing(big[0]) as sock:
            sock.sendall(b" " * (BIG - MB))
            body = json.dumps({"rows": one_row}).encode()
            sock.sendall(request_head(len(body)) + body)
            status, answer = read_response(sock)
            assert status == 200 and answer["model_version"] == 1
        for sock in big[1:]:
            sock.close()


@pytest.mark.server
def test_a_chunked_body_is_refused_once_past_the_limit_though_it_never_ends(ctr_app, one_row):
    with serve_in_thread(ctr_app) as url, closing(connect(url)) as sock:
        sock.sendall(request_head(None))
        chunk = b" " * (256 * 1024)
        for _ in range(5):  # 1.25 MB, past the 1 MiB limit; the body's last chunk never comes
            sock.sendall(b"%x\r\n%s\r\n" % (len(chunk), chunk))
        status, error = read_response(sock)
        assert status == 413
        assert "more than 1,048,576 bytes" in error["error"]
        assert httpx.post(f"{url}/predict", json={"rows": one_row}, timeout=60).status_code == 200


@pytest.mark.server
def test_refusals_are_counted_for_metrics(ctr_app, one_row):
    from starlette.testclient import TestClient

    with TestClient(ctr_app) as client:
        assert client.post("/predict", content=b" " * (MB + 1)).status_code == 413
        assert client.post("/predict", json={"rows": one_row * 1001}).status_code == 413
        assert client.post("/predict", json={"rows": [{}]}).status_code == 422
        metrics = client.get("/metrics").text
    for reason in ("body_too_large", "too_many_rows", "invalid_request"):
        assert f'keiko_serving_refused_requests_total{{model="ctr",reason="{reason}"}} 1.0' in metrics
