"""One socket write per response: a response's head waits for its body, and nothing held is ever left behind."""

from __future__ import annotations

import asyncio
import socket
from typing import ClassVar

import httpx
import pytest
from starlette.applications import Starlette
from starlette.responses import JSONResponse, StreamingResponse
from starlette.routing import Route

from conftest import serve_in_thread
from keiko.serving.http_write import OneWriteHttpToolsProtocol, OneWriteTransport


class FakeTransport:
    def __init__(self) -> None:
        self.written: list[bytes] = []
        self.closed = False

    def write(self, data: bytes) -> None:
        self.written.append(data)

    def close(self) -> None:
        self.closed = True

    def get_extra_info(self, name: str):
        return None


def test_a_head_is_held_until_its_body_and_both_go_as_one_write():
    async def scenario():
        fake = FakeTransport()
        transport = OneWriteTransport(fake, asyncio.get_running_loop())
        transport.write(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n")
        assert fake.written == []
        transport.write(b"{}")
        assert fake.written == [b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n{}"]
        # A 100 Continue goes at once: the client waits for it before it sends the body.
        transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        assert fake.written[-1] == b"HTTP/1.1 100 Continue\r\n\r\n"
        # A head with no body in the same turn goes at the turn's end; one before a close goes with the close.
        transport.write(b"HTTP/1.1 204 No Content\r\n\r\n")
        await asyncio.sleep(0)
        assert fake.written[-1] == b"HTTP/1.1 204 No Content\r\n\r\n"
        transport.write(b"HTTP/1.1 400 Bad Request\r\n\r\n")
        transport.close()
        assert fake.written[-1] == b"HTTP/1.1 400 Bad Request\r\n\r\n" and fake.closed
        assert transport.get_extra_info("peername") is None  # the rest is the socket transport's own

    asyncio.run(scenario())


class CountingProtocol(OneWriteHttpToolsProtocol):
    transports: ClassVar[list[OneWriteTransport]] = []

    def connection_made(self, transport):
        super().connection_made(transport)
        CountingProtocol.transports.append(self.transport)


@pytest.fixture
def server():
    async def answer(_):
        return JSONResponse({"ok": True})

    async def echo(request):
        return JSONResponse({"bytes": len(await request.body())})

    async def stream(_):
        async def parts():
            for part in (b"a", b"b", b"c"):
                yield part

        return StreamingResponse(parts())

    routes = [Route("/answer", answer), Route("/echo", echo, methods=["POST"]), Route("/stream", stream)]
    CountingProtocol.transports = []
    with serve_in_thread(Starlette(routes=routes), http=CountingProtocol) as url:
        yield url


def test_a_live_server_sends_each_response_in_one_write(server):
    with httpx.Client(base_url=server) as client:  # one connection, kept alive

        def writes_of(request) -> int:
            before = CountingProtocol.transports[0].writes if CountingProtocol.transports else 0
            request()
            return CountingProtocol.transports[0].writes - before  # the connection's transport (one, asserted below)

        assert [writes_of(lambda: client.get("/answer")) for _ in range(5)] == [1] * 5
        # A body the app reads after Expect: 100-continue: the 100 goes first, on its own, then the answer.
        sent = client.build_request("POST", "/echo", content=b"x" * 10_000, headers={"expect": "100-continue"})
        assert writes_of(lambda: client.send(sent)) == 2
        # A streamed body: its head goes with the first chunk, then a write per chunk and one for the end.
        assert writes_of(lambda: client.get("/stream")) == 3 + 1
    assert len(CountingProtocol.transports) == 1


def test_a_malformed_request_still_gets_its_400(server):
    host, port = server.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port))) as sock:
        sock.sendall(b"NOT HTTP AT ALL\r\n\r\n")
        assert sock.recv(1024).startswith(b"HTTP/1.1 400")
