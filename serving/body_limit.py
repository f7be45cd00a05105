"""An ASGI middleware that refuses request bodies over a size limit with HTTP 413.

Neither uvicorn nor FastAPI limits the body size: KServe reads the whole body into memory before
a model sees it. With a ``Content-Length`` header the request is refused before its body is read;
a chunked body is read up to the limit (and refused past it), then replayed to the application.
"""

from __future__ import annotations

import orjson

DEFAULT_MAX_BODY_BYTES = 16 * 1024 * 1024


class BodySizeLimit:
    """Wraps an ASGI app; HTTP requests with bodies over ``max_bytes`` get a JSON 413 answer."""

    def __init__(self, app, max_bytes: int = DEFAULT_MAX_BODY_BYTES):
        self.app, self.max_bytes = app, max_bytes

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        length = _content_length(scope)
        if length is not None:
            if length > self.max_bytes:
                return await self._refuse(send, f"request body of {length} bytes")
            return await self.app(scope, receive, send)
        body = await self._read_bounded(receive)
        if body is None:
            return await self._refuse(send, "chunked request body")
        return await self.app(scope, replay_body(body, receive), send)

    async def _read_bounded(self, receive) -> bytes | None:
        """The whole body, or None once it grows past the limit."""
        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return b"".join(chunks)
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_bytes:
                return None
            chunks.append(chunk)
            if not message.get("more_body", False):
                return b"".join(chunks)

    async def _refuse(self, send, what: str) -> None:
        body = orjson.dumps({"error": f"{what} is over the limit of {self.max_bytes} bytes"})
        await send(
            {
                "type": "http.response.start",
                "status": 413,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                    (b"connection", b"close"),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})


def _content_length(scope) -> int | None:
    for name, value in scope.get("headers", ()):
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None


def replay_body(body: bytes, receive):
    """A ``receive`` that gives the buffered body once, then waits on the real one (disconnect)."""
    sent = False

    async def replay():
        nonlocal sent
        if sent:
            return await receive()
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    return replay
