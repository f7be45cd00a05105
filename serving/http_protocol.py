"""uvicorn's httptools protocol as kfloop's servers speak it: each response's head and body written to
the socket together, and bytes that are not an HTTP request answered in JSON.

uvicorn writes a response's status line and headers when the application sends
``http.response.start``, and the body when it sends ``http.response.body``: two ``send`` calls,
two TCP segments, for every answer. On loopback each write delivers its segment to the reader and
wakes it in the writer's own system call, so for a one-row prediction the first write is the most
expensive line of the whole request path (``benchmarks/serving.py``, py-spy: ~12% of the drift
transformer's samples at 16 concurrent requests, the body's write another ~5%).

``CoalescingHttpToolsProtocol`` hands uvicorn a transport that holds a response head (the bytes
uvicorn writes for ``http.response.start``: ``HTTP/1.1 <status>`` through the blank line) until the
next write, and sends both in one call. Nothing waits for the body: a held head is written at the
latest on the event loop's next turn (a 204, a HEAD answer, a streamed body sent later), and
before the transport closes. ``100 Continue`` goes out at once. The bytes on the wire, and their
order, are exactly uvicorn's.

uvicorn answers bytes it cannot parse as HTTP/1.1 with a plain-text 400; this protocol answers
``{"error": "<parser's message>: not an HTTP/1.1 request"}``, like every other kfloop error. The
predictor, the drift transformer, the retraining trigger and the local gateway all serve with it.
"""

from __future__ import annotations

import asyncio
from typing import Any

import orjson
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

_HEAD_START = b"HTTP/1.1 "
_HEAD_END = b"\r\n\r\n"
_CONTINUE = b"HTTP/1.1 100 "


class CoalescingTransport:
    """A transport that writes a response head together with the write after it (see the module)."""

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop):
        self._transport, self._loop = transport, loop
        self._held: bytes | None = None

    def write(self, data: bytes) -> None:
        if self._held is not None:
            data, self._held = self._held + data, None
        elif data.startswith(_HEAD_START) and data.endswith(_HEAD_END) and not data.startswith(_CONTINUE):
            self._held = data
            self._loop.call_soon(self.flush)
            return
        self._transport.write(data)

    def flush(self) -> None:
        """Write a held head now (not when the connection is already closing: the client is gone, and a
        closed transport refuses writes)."""
        if self._held is not None:
            data, self._held = self._held, None
            if not self._transport.is_closing():
                self._transport.write(data)

    def close(self) -> None:
        self.flush()
        self._transport.close()

    def __getattr__(self, name: str) -> Any:  # everything else is the transport's own
        return getattr(self._transport, name)


class CoalescingHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's ``HttpToolsProtocol``, writing through a ``CoalescingTransport``."""

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(CoalescingTransport(transport, self.loop))

    def send_400_response(self, msg: str) -> None:
        """Bytes that are not an HTTP request: a JSON 400, and the connection closed."""
        body = orjson.dumps({"error": f"{msg.rstrip('.')}: not an HTTP/1.1 request"})
        head = b"HTTP/1.1 400 Bad Request\r\ncontent-type: application/json\r\n"
        head += b"content-length: %d\r\nconnection: close\r\n\r\n" % len(body)
        self.transport.write(head + body)
        self.transport.close()
