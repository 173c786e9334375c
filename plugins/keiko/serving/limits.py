"""Reading a request body no larger than serving.max_body_bytes, straight from ASGI.

A declared Content-Length over the limit is refused before a byte of the body is read; a chunked body is
counted while it arrives and refused at the limit, so at most the limit plus one received chunk is ever
held. The refusal does not close the connection: uvicorn (httptools and h11 alike) then reads and drops
the rest of the body as it comes, a chunk per event-loop turn (other connections are served between
them), and then serves the connection's next request; a client that stops sending is closed after
uvicorn's keep-alive timeout (5 s). Closing at once would have the kernel answer the bytes still arriving
with a reset, which can erase the 413 before the client has read it (RFC 9112, section 9.6): a client
that sends its whole body before reading the response would see only the reset.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import msgspec


class BodyTooLarge(Exception):
    status = 413

    def __init__(self, limit: int, declared: int | None) -> None:
        self.limit, self.declared = limit, declared
        size = f"{declared:,} bytes" if declared is not None else f"more than {limit:,} bytes"
        super().__init__(f"request body too large: {size}; at most {limit:,} bytes (serving.max_body_bytes)")

    def response(self) -> bytes:
        return msgspec.json.encode({"error": str(self), "max_body_bytes": self.limit})


def declared_length(headers: list[tuple[bytes, bytes]]) -> int | None:
    """Content-Length, or None for a chunked body (the HTTP server has already refused a malformed one)."""
    for name, value in headers:
        if name == b"content-length":
            return int(value)
    return None


async def read_body(scope: dict, receive: Callable[[], Awaitable[dict[str, Any]]], limit: int) -> bytes:
    """The whole body, or BodyTooLarge as soon as it is known to exceed `limit` bytes."""
    declared = declared_length(scope["headers"])
    if declared is not None and declared > limit:
        raise BodyTooLarge(limit, declared)
    chunks, size = [], 0
    while True:
        message = await receive()
        if message["type"] != "http.request":  # http.disconnect: nobody is left to answer
            break
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise BodyTooLarge(limit, declared)
        chunks.append(chunk)
        if not message.get("more_body", False):
            break
    return b"".join(chunks)
