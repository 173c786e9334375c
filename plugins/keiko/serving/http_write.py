"""One socket write per HTTP response: uvicorn's httptools protocol with a transport that joins head and body.

uvicorn writes a response's status line and headers (http.response.start) and its body (http.response.body) as two
transport writes, and with an empty write buffer each goes straight to a send() syscall: two per response, 42 % of
a replica's time under load in the profile of issue 19 (bench/RESULTS.md, Serving). keiko answers every hot-path
request with a head and one body in the same event-loop turn (keiko.serving.app.respond), so this transport holds
a response's head until the next write, and sends both as one. What is held is never left behind: it goes out
with the next write, at close, or at the end of the event-loop turn, whichever is first (a 100 Continue, an
error page, a streamed body each go out no later than they would have). uvicorn takes the protocol class as its
`http` setting (`keiko serve` passes it); nothing of uvicorn is patched.
"""

from __future__ import annotations

import asyncio
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

_HEAD = b"HTTP/1.1 "


class OneWriteTransport:
    """A transport that holds a response head until the body's write (or the turn's end) and sends them as one."""

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        self._transport = transport
        self._loop = loop
        self._held: bytes | None = None
        self.writes = 0  # writes handed to the socket's transport (tests count them)

    def write(self, data: bytes) -> None:
        held = self._held
        if held is not None:
            self._held = None
            self._send(held + data)
        elif data.startswith(_HEAD) and not data.startswith(b"HTTP/1.1 100 "):
            self._held = data
            self._loop.call_soon(self.flush)
        else:
            self._send(data)

    def _send(self, data: bytes) -> None:
        self.writes += 1
        self._transport.write(data)

    def flush(self) -> None:
        held, self._held = self._held, None
        if held is not None:
            self._send(held)

    def writelines(self, lines: Any) -> None:
        self.write(b"".join(lines))

    def close(self) -> None:
        self.flush()
        self._transport.close()

    def write_eof(self) -> None:
        self.flush()
        self._transport.write_eof()

    def __getattr__(self, name: str) -> Any:  # everything else is the socket's transport's own
        return getattr(self._transport, name)


class OneWriteHttpToolsProtocol(HttpToolsProtocol):
    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(OneWriteTransport(transport, self.loop))
