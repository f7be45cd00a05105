"""Limits on the gateway's client connections, so slow or hostile clients cannot hold its memory or
its connections: a deadline for a request's headers and one for its body, a cap on open connections,
and one log line per refused request (no traceback).

- ``HeaderDeadline``: uvicorn's HTTP protocol (httptools), with a deadline of ``header_seconds`` from
  a connection's start (or a kept-alive connection's next request) to the end of the request's
  headers; a client that sends its headers slower is disconnected (uvicorn has no such timeout: 1,000
  connections sending half a request stayed open until the client gave up).
- ``BodyDeadline``: ASGI middleware; the whole body must arrive within ``body_seconds`` of the first
  read, else HTTP 408 (``{"error": ...}``) and the connection is closed.
- The cap on open connections is uvicorn's ``limit_concurrency`` (HTTP 503 beyond it, checked by
  ``HeaderDeadline`` so that the answer is ``{"error": ...}`` JSON, as is its 400 for bytes that are not
  an HTTP request), the body size limit ``kfloop.serving.body_limit.BodySizeLimit`` (413):
  ``Gateway.server`` sets both.
"""

from __future__ import annotations

import asyncio
import logging

import orjson

from kfloop.serving.http_protocol import CoalescingHttpToolsProtocol

log = logging.getLogger(__name__)

DEFAULT_HEADER_SECONDS = 10.0
DEFAULT_BODY_SECONDS = 30.0
DEFAULT_MAX_CONNECTIONS = 1000


def header_deadline_protocol(header_seconds: float) -> type:
    """kfloop's httptools protocol (``kfloop.serving.http_protocol``: one write per answer, a JSON 400 for
    bytes that are not HTTP) with a deadline for each request's headers."""

    class HeaderDeadline(CoalescingHttpToolsProtocol):
        _header_timer: asyncio.TimerHandle | None = None

        def __init__(self, config, *args, **kwargs) -> None:
            super().__init__(config, *args, **kwargs)
            # the cap is checked here, so the 503 beyond it is JSON like every other error (uvicorn's own
            # answer is plain text), and so is the 400 for a request that is not HTTP
            self.max_clients, self.limit_concurrency = self.limit_concurrency, None

        def on_headers_complete(self) -> None:
            self._cancel_header_timer()
            cap = self.max_clients
            if cap is None or (len(self.connections) < cap and len(self.tasks) < cap):
                return super().on_headers_complete()
            self.logger.warning("Exceeded concurrency limit.")
            app, self.app = self.app, _over_capacity
            try:
                super().on_headers_complete()
            finally:
                self.app = app

        def connection_made(self, transport) -> None:
            super().connection_made(transport)
            self._start_header_timer()

        def on_message_begin(self) -> None:
            super().on_message_begin()
            self._start_header_timer()

        def connection_lost(self, exc) -> None:
            self._cancel_header_timer()
            super().connection_lost(exc)

        def _start_header_timer(self) -> None:
            if self._header_timer is None:
                self._header_timer = self.loop.call_later(header_seconds, self._headers_too_slow)

        def _cancel_header_timer(self) -> None:
            if self._header_timer is not None:
                self._header_timer.cancel()
                self._header_timer = None

        def _headers_too_slow(self) -> None:
            self._header_timer = None
            peer = self.client or ("?", 0)
            log.warning("closed a connection from %s:%s: no complete request headers within %gs", *peer, header_seconds)
            self.transport.close()

    return HeaderDeadline


class BodyDeadline:
    """ASGI middleware: a request's body must arrive within ``body_seconds`` of the first read, else
    HTTP 408. The app sees a disconnect at the deadline (Starlette's ``ClientDisconnect``, which the
    gateway handles in one log line); what it answers then is replaced by the 408."""

    def __init__(self, app, body_seconds: float = DEFAULT_BODY_SECONDS):
        self.app, self.body_seconds = app, body_seconds

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        loop = asyncio.get_running_loop()
        deadline: float | None = None
        complete = timed_out = started = False

        async def timed_receive():
            nonlocal deadline, complete, timed_out
            if complete or timed_out:  # after the body: waiting for a disconnect is not bounded
                return await receive() if complete else {"type": "http.disconnect"}
            if deadline is None:
                deadline = loop.time() + self.body_seconds
            try:
                message = await asyncio.wait_for(receive(), max(0.0, deadline - loop.time()))
            except asyncio.TimeoutError:
                timed_out = True
                return {"type": "http.disconnect"}
            if message["type"] != "http.request" or not message.get("more_body", False):
                complete = True
            return message

        async def tracked_send(message):
            nonlocal started
            if timed_out:
                return  # the 408 below answers instead
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        await self.app(scope, timed_receive, tracked_send)
        if timed_out and not started:
            log.warning(
                "%s %s: the body did not arrive within %gs (408)", scope["method"], scope["path"], self.body_seconds
            )
            await _answer(send, 408, f"the request body did not arrive within {self.body_seconds:g} s")


async def _over_capacity(scope, receive, send) -> None:
    """The answer to a request over the connection cap (uvicorn's ``limit_concurrency``), as JSON."""
    await _answer(send, 503, "the gateway is serving its maximum number of connections; try again shortly")


async def _answer(send, status: int, error: str) -> None:
    body = orjson.dumps({"error": error})
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": [*headers, (b"connection", b"close")]})
    await send({"type": "http.response.body", "body": body})
