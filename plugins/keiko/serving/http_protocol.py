"""keiko's /predict answered in the HTTP protocol itself, without an ASGI cycle.

uvicorn runs every request as an ASGI cycle: a scope dict, a RequestResponseCycle with its asyncio.Event, a Task,
receive and send messages, a quarter of a small request's CPU (bench/serving.py: 54 us a /predict request of CPU
with this protocol, 71 us under plain uvicorn). A /predict request of the row path is a small whole body answered
in the turn it arrives, so this protocol (uvicorn's httptools protocol, subclassed: its parser, flow control,
keep-alive and pipelining are uvicorn's) hands a POST to a /predict path straight to keiko.serving.app's
PredictEndpoint when its Content-Length is declared and within the model's limit, nothing asks for 100 Continue,
and the model answers small requests without a micro-batch: parsed, answered and written as one write in the
callback that completes its body. Everything else (other paths and methods, chunked or oversized bodies,
CatBoost's micro-batched models, several models at once, a request behind a pipelined one, an access log) goes
through uvicorn's ASGI cycle as before, to the same PredictEndpoint. No library answers HTTP/1.1 from Python
without an ASGI or WSGI cycle per request, hence this subclass; nothing of uvicorn is patched.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field
from typing import Any

from uvicorn.protocols.http.httptools_impl import STATUS_LINE

from keiko.serving.app import UNROUTED, ModelServerApp, Pending, PredictEndpoint, Reply, error_body, predict_target
from keiko.serving.http_write import OneWriteHttpToolsProtocol
from keiko.serving.inference_protocol import ModelGroup, ModelNotFound
from keiko.serving.limits import declared_length

log = logging.getLogger("keiko.serving")


@dataclass
class _HotRequest:
    group: ModelGroup
    keep_alive: bool
    started: float
    body: list[bytes] = field(default_factory=list)


def predict_endpoint(app: Any) -> PredictEndpoint | None:
    """The PredictEndpoint of the ModelServerApp under uvicorn's middleware, if the app is one."""
    while app is not None:
        if isinstance(app, ModelServerApp):
            return app.predict
        app = getattr(app, "app", None)
    return None


class KeikoHttpProtocol(OneWriteHttpToolsProtocol):
    """What `keiko serve` runs: one write a response, and /predict's row path without ASGI."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.predict = predict_endpoint(self.app)
        self._hot: _HotRequest | None = None
        self._socket: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        self._socket = transport  # a whole response goes straight to it, not through the one-write transport
        super().connection_made(transport)

    # -- httptools' callbacks -------------------------------------------------------------------------------

    def on_message_begin(self) -> None:
        self._hot = None
        if self.predict is None:
            super().on_message_begin()
            return
        # The ASGI scope is built at the end of the headers, for a request that goes through ASGI.
        self.url, self.headers, self.expect_100_continue = b"", [], False

    def on_headers_complete(self) -> None:
        if self.predict is not None:
            self._hot = self._hot_request()
            if self._hot is not None:
                return
            self._begin_scope()
        super().on_headers_complete()

    def on_body(self, body: bytes) -> None:
        if self._hot is None:
            super().on_body(body)
        else:
            self._hot.body.append(body)  # at most the declared length, within the model's limit

    def on_message_complete(self) -> None:
        hot, self._hot = self._hot, None
        if hot is None:
            super().on_message_complete()
            return
        body = b"".join(hot.body)
        try:
            reply = self.predict.answer_now(self.headers, body, hot.group)
        except Exception:
            log.exception("answering /predict failed")
            reply = 500, error_body("internal error"), [UNROUTED] * len(hot.group.servers)
        if isinstance(reply, Pending):  # a large request: its rows join a micro-batch, as under ASGI
            self._through_asgi(body)
            return
        self._write(hot, reply)

    # -- the two ways ---------------------------------------------------------------------------------------

    def _hot_request(self) -> _HotRequest | None:
        """The request in hand, if this protocol answers it; None sends it through ASGI."""
        parser = self.parser
        if parser.get_method() != b"POST" or self.expect_100_continue or parser.should_upgrade():
            return None
        if self.access_log or self.limit_concurrency is not None or self.flow.write_paused:
            return None  # uvicorn's own: the access log's line, the concurrency limit's 503, waiting for the client
        if self.cycle is not None and not self.cycle.response_complete:
            return None  # pipelined behind a request still answering: uvicorn queues it
        path = self.url.partition(b"?")[0]
        if not path.isascii() or b"%" in path:
            return None
        hot, name = predict_target(path.decode("ascii"))
        if not hot:
            return None
        try:
            group = self.predict.group(name)
        except ModelNotFound:
            return None  # ASGI's 404 names what is hosted
        single = group.single
        if single is None or not single.answers_small_requests_now:
            return None
        declared = declared_length(self.headers)
        if declared is None or declared > group.max_body_bytes:
            return None  # chunked, or refused with a 413 before its body is read
        keep_alive = parser.get_http_version() != "1.0" and parser.should_keep_alive()
        return _HotRequest(group, keep_alive, time.perf_counter())

    def _begin_scope(self) -> None:
        """uvicorn's scope for the request whose URL and headers are in hand."""
        url, headers, expect = self.url, self.headers, self.expect_100_continue
        super().on_message_begin()
        self.url, self.expect_100_continue = url, expect
        self.headers.extend(headers)

    def _through_asgi(self, body: bytes) -> None:
        """What uvicorn's callbacks would have done with the request: its ASGI cycle, with the whole body."""
        self._begin_scope()
        super().on_headers_complete()
        if body:
            super().on_body(body)
        super().on_message_complete()

    def _write(self, hot: _HotRequest, reply: Reply) -> None:
        status, body, _ = reply
        head = [STATUS_LINE[status]]
        for name, value in self.server_state.default_headers:
            head += [name, b": ", value, b"\r\n"]
        head.append(b"content-type: application/json\r\ncontent-length: %d\r\n" % len(body))
        if not hot.keep_alive:
            head.append(b"connection: close\r\n")
        head += [b"\r\n", body]
        self._socket.write(b"".join(head))
        PredictEndpoint.observe(hot.group, reply, hot.started)
        if hot.keep_alive:
            self.on_response_complete()  # uvicorn's: the keep-alive timer, the next pipelined request
        else:
            self.server_state.total_requests += 1
            self.transport.close()
