"""A small HTTP/1.1 client for one upstream server: pooled keep-alive connections on asyncio, with
responses parsed by ``httptools`` (the C parser uvicorn uses for requests).

The drift transformer makes one POST to its predictor per request. aiohttp spent ~0.27 ms of CPU
on such a call (session and connector bookkeeping, request and response objects, stream
readers), a third of the transformer's CPU per one-row request; this client writes the request
in one call and parses the answer as it arrives, for ~0.10 ms (``benchmarks/predictor_client.py``).

What it does: POST only (``post``), ``Content-Length`` bodies out, any HTTP/1.1 framing back
(length, chunked, close-delimited: the parser handles them); at most ``max_connections``
requests in flight (the rest wait for a connection); a connection is reused when the server
keeps it alive. A request on a reused connection that the server closed before answering (an
idle keep-alive connection timing out) is sent again once on a new connection, as urllib3 and
aiohttp do; a failed connect is retried ``connect_retries`` times. Failures are
``UpstreamUnreachable`` (no connection), ``UpstreamClosed`` (the connection ended without a whole
answer) and ``asyncio.TimeoutError`` (no whole answer within ``timeout``).
"""

from __future__ import annotations

import asyncio
import ssl as ssl_module
import urllib.parse
from collections.abc import Mapping
from typing import NamedTuple

import httptools


class HttpResponse(NamedTuple):
    status: int
    headers: dict[str, str]  # lower-case names; a repeated header keeps its last value
    body: bytes


class UpstreamUnreachable(ConnectionError):
    """No connection to the upstream could be made."""


class UpstreamClosed(ConnectionError):
    """The connection ended (or the answer could not be parsed) before a whole answer arrived."""


class HttpPool:
    """POSTs to one ``http://`` or ``https://`` origin over pooled keep-alive connections."""

    def __init__(
        self, base_url: str, max_connections: int = 100, connect_timeout: float = 5.0, connect_retries: int = 0
    ):
        url = urllib.parse.urlsplit(base_url)
        if url.scheme not in ("http", "https") or not url.hostname:
            raise ValueError(f"upstream URL {base_url!r}: expected http://host[:port] or https://host[:port]")
        self.host = url.hostname
        self.port = url.port or (443 if url.scheme == "https" else 80)
        self.ssl = ssl_module.create_default_context() if url.scheme == "https" else None
        self.max_connections, self.connect_timeout, self.connect_retries = (
            max_connections,
            connect_timeout,
            connect_retries,
        )
        host_header = url.netloc.rsplit("@", 1)[-1]
        self._head = f"host: {host_header}\r\n".encode("latin-1")
        self._idle: list[_Connection] = []
        self._slots: asyncio.Semaphore | None = None  # made in the running loop on first use
        self._open: set[_Connection] = set()

    async def post(self, path: str, body: bytes, headers: Mapping[str, str], timeout: float) -> HttpResponse:
        """The upstream's answer to ``POST path`` with ``body``; ``headers`` must not hold CR or LF."""
        request = self._request(path, body, headers)
        if self._slots is None:
            self._slots = asyncio.Semaphore(self.max_connections)
        async with self._slots:
            # a deadline on the answer's future, not asyncio.wait_for: that wraps the exchange in a task of
            # its own, started on the next turn of the loop (an extra turn and task per request)
            return await self._exchange(request, asyncio.get_running_loop().time() + timeout)

    async def aclose(self) -> None:
        """Close every connection (requests in flight fail with ``UpstreamClosed``)."""
        for connection in list(self._open):
            connection.close()
        self._idle.clear()

    def _request(self, path: str, body: bytes, headers: Mapping[str, str]) -> bytes:
        lines = [
            f"POST {path} HTTP/1.1\r\n".encode("latin-1"),
            self._head,
            f"content-length: {len(body)}\r\n".encode("latin-1"),
        ]
        for name, value in headers.items():
            if "\r" in value or "\n" in value or "\r" in name or "\n" in name or ":" in name:
                raise ValueError(f"header {name!r} has a line break or its name a colon; not sent")
            lines.append(f"{name}: {value}\r\n".encode("latin-1"))
        lines.append(b"\r\n")
        lines.append(body)
        return b"".join(lines)

    async def _exchange(self, request: bytes, deadline: float) -> HttpResponse:
        """``request``'s answer; ``asyncio.TimeoutError`` when it has not arrived by ``deadline`` (loop time)."""
        connection, reused = await self._connection(deadline)
        try:
            return await connection.send(request, deadline)
        except UpstreamClosed:
            if not (reused and not connection.answered_any_bytes):
                raise
        connection, _ = await self._connection(deadline, fresh=True)  # a stale keep-alive connection: once more
        return await connection.send(request, deadline)

    async def _connection(self, deadline: float, fresh: bool = False) -> tuple[_Connection, bool]:
        while self._idle and not fresh:
            connection = self._idle.pop()
            if not connection.closed:
                return connection, True
        failed, loop = 0, asyncio.get_running_loop()
        while True:
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise asyncio.TimeoutError()
            try:
                _, connection = await asyncio.wait_for(
                    loop.create_connection(lambda: _Connection(self), self.host, self.port, ssl=self.ssl),
                    min(self.connect_timeout, remaining),
                )
                return connection, False
            except (OSError, asyncio.TimeoutError) as e:
                if loop.time() >= deadline:  # the request's own time ran out, not the connect's
                    raise asyncio.TimeoutError() from e
                failed += 1
                if failed > self.connect_retries:
                    raise UpstreamUnreachable(
                        f"cannot connect to {self.host}:{self.port}: {e.__class__.__name__}: {e}"
                    ) from e

    def _release(self, connection: _Connection) -> None:
        if not connection.closed:
            self._idle.append(connection)


class _Connection(asyncio.Protocol):
    """One connection: one request at a time, the answer parsed as it arrives."""

    def __init__(self, pool: HttpPool):
        self.pool = pool
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.closed = False
        self.answered_any_bytes = False
        self._waiter: asyncio.Future | None = None
        self._headers: dict[str, str] = {}
        self._body: list[bytes] = []
        self._headers_done = False

    async def send(self, request: bytes, deadline: float) -> HttpResponse:
        self.answered_any_bytes, self._headers, self._body, self._headers_done = False, {}, [], False
        loop = asyncio.get_running_loop()
        self._waiter = waiter = loop.create_future()
        timer = loop.call_at(deadline, _expire, waiter)
        self.transport.write(request)
        try:
            response = await waiter
        except BaseException:  # timeout or cancellation: the connection is mid-answer, not reusable
            self._waiter = None
            self.close()
            raise
        finally:
            timer.cancel()
        self._waiter = None
        self.pool._release(self)
        return response

    def close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.close()

    # -- asyncio.Protocol ---------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.Transport) -> None:
        self.transport = transport
        self.pool._open.add(self)

    def data_received(self, data: bytes) -> None:
        self.answered_any_bytes = True
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as e:
            self._fail(UpstreamClosed(f"unparseable answer from {self.pool.host}:{self.pool.port}: {e}"))
            self.close()

    def eof_received(self) -> None:
        """The end of a close-delimited body (no length, not chunked) completes the answer."""
        if (
            self._waiter is not None
            and self._headers_done
            and "content-length" not in self._headers
            and "chunked" not in self._headers.get("transfer-encoding", "").lower()
        ):
            self.closed = True
            self.on_message_complete()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.pool._open.discard(self)
        self._fail(
            UpstreamClosed(
                f"connection to {self.pool.host}:{self.pool.port} closed before a whole answer"
                + (f": {exc}" if exc else "")
            )
        )

    def _fail(self, error: Exception) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_exception(error)

    # -- httptools callbacks --------------------------------------------------------------------------

    def on_header(self, name: bytes, value: bytes) -> None:
        self._headers[name.decode("latin-1").lower()] = value.decode("latin-1")

    def on_headers_complete(self) -> None:
        self._headers_done = True

    def on_body(self, body: bytes) -> None:
        self._body.append(body)

    def on_message_complete(self) -> None:
        response = HttpResponse(self.parser.get_status_code(), self._headers, b"".join(self._body))
        if self.closed or not self.parser.should_keep_alive():
            self.close()
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(response)


def _expire(waiter: asyncio.Future) -> None:
    """The deadline of an answer passed: ``asyncio.TimeoutError``, as ``asyncio.wait_for`` raises."""
    if not waiter.done():
        waiter.set_exception(asyncio.TimeoutError())
