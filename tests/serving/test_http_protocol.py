"""The coalescing protocol: one write per plain answer, and every answer's bytes exactly uvicorn's."""

from __future__ import annotations

import asyncio
import socket
import threading
import time

import pytest
import uvicorn

from kfloop.serving.http_protocol import CoalescingHttpToolsProtocol, CoalescingTransport


class RecordingTransport:
    def __init__(self):
        self.writes: list[bytes] = []
        self.closed = False

    def write(self, data: bytes) -> None:
        if self.closed:
            raise RuntimeError("unable to perform operation on the closed transport")
        self.writes.append(data)

    def close(self) -> None:
        self.closed = True

    def is_closing(self) -> bool:
        return self.closed

    def lose(self) -> None:
        """The connection went away (the client, or the server shutting down): uvloop closes the handle,
        and a write after that raises."""
        self.closed = True

    def get_extra_info(self, name: str):
        return f"extra:{name}"


HEAD = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n"


def test_a_head_held_when_the_connection_goes_away_is_dropped_not_written():
    errors = []

    async def scenario():
        loop = asyncio.get_running_loop()
        loop.set_exception_handler(lambda _, context: errors.append(context))  # what asyncio would log
        inner = RecordingTransport()
        transport = CoalescingTransport(inner, loop)
        transport.write(HEAD)  # a streamed answer: the body comes later
        inner.lose()
        await asyncio.sleep(0)  # the held head's flush: no write on the closed transport, no error
        transport.close()
        return inner

    assert asyncio.run(scenario()).writes == [] and errors == []


def test_a_head_goes_out_with_the_next_write_or_on_the_next_turn_of_the_loop():
    async def scenario():
        inner = RecordingTransport()
        transport = CoalescingTransport(inner, asyncio.get_running_loop())
        transport.write(HEAD)
        transport.write(b"{}")
        together = list(inner.writes)
        transport.write(HEAD)  # no body follows (a 204, HEAD): written on the loop's next turn
        held = list(inner.writes)
        await asyncio.sleep(0)
        alone = list(inner.writes)
        transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")  # never held: the client waits for it
        transport.write(HEAD)
        transport.close()  # a held head is written before the transport closes
        return together, held, alone, inner, transport.get_extra_info("socket")

    together, held, alone, inner, extra = asyncio.run(scenario())
    assert together == [HEAD + b"{}"]
    assert held == together and alone == [HEAD + b"{}", HEAD]
    assert inner.writes[2:] == [b"HTTP/1.1 100 Continue\r\n\r\n", HEAD] and inner.closed
    assert extra == "extra:socket"  # the rest is the transport's own


async def app(scope, receive, send):
    """Answers of every shape: plain, empty (204), streamed with a pause, chunked, and HEAD."""
    if scope["type"] != "http":
        return
    body = b""
    while True:
        message = await receive()
        body += message.get("body", b"")
        if not message.get("more_body"):
            break
    path = scope["path"]
    if path == "/empty":
        await send({"type": "http.response.start", "status": 204, "headers": []})
        await send({"type": "http.response.body", "body": b""})
        return
    headers = [(b"content-type", b"text/plain")]
    if path == "/stream":  # chunked, the body sent later, in two parts
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await asyncio.sleep(0.05)
        await send({"type": "http.response.body", "body": b"part1-", "more_body": True})
        await asyncio.sleep(0.05)
        await send({"type": "http.response.body", "body": b"part2"})
        return
    answer = b"echo:" + body
    headers.append((b"content-length", str(len(answer)).encode()))
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": answer})


@pytest.fixture(scope="module")
def server_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    config = uvicorn.Config(
        app, host="127.0.0.1", port=port, http=CoalescingHttpToolsProtocol, log_level="error", lifespan="off"
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        assert time.monotonic() < deadline, "server did not start"
        time.sleep(0.02)
    yield port
    server.should_exit = True
    thread.join(5)


def exchange(port: int, request: bytes, expect_end: bytes, timeout: float = 5.0) -> bytes:
    """Send ``request`` on a new connection; what comes back until ``expect_end`` (or the connection closes)."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(request)
        data = b""
        while not data.endswith(expect_end):
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
        return data


def test_answers_of_every_shape_arrive_whole_and_in_order(server_port):
    plain = exchange(server_port, b"POST /echo HTTP/1.1\r\nhost: x\r\ncontent-length: 3\r\n\r\nabc", b"echo:abc")
    assert plain.startswith(b"HTTP/1.1 200 OK\r\n") and plain.endswith(b"\r\n\r\necho:abc")
    empty = exchange(server_port, b"GET /empty HTTP/1.1\r\nhost: x\r\n\r\n", b"\r\n\r\n")
    assert empty.startswith(b"HTTP/1.1 204 No Content\r\n")
    head = exchange(server_port, b"HEAD /echo HTTP/1.1\r\nhost: x\r\n\r\n", b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 OK\r\n") and b"content-length: 5" in head
    stream = exchange(server_port, b"GET /stream HTTP/1.1\r\nhost: x\r\n\r\n", b"0\r\n\r\n")
    assert stream.startswith(b"HTTP/1.1 200 OK\r\n") and b"transfer-encoding: chunked" in stream
    assert stream.endswith(b"\r\n\r\n6\r\npart1-\r\n5\r\npart2\r\n0\r\n\r\n")
    continued = b"POST /echo HTTP/1.1\r\nhost: x\r\ncontent-length: 2\r\nexpect: 100-continue\r\n\r\n"
    with socket.create_connection(("127.0.0.1", server_port), timeout=5) as s:
        s.sendall(continued)
        assert s.recv(65536) == b"HTTP/1.1 100 Continue\r\n\r\n"  # before the body was sent
        s.sendall(b"hi")
        answer = b""
        while not answer.endswith(b"echo:hi"):
            answer += s.recv(65536)
        assert answer.startswith(b"HTTP/1.1 200 OK\r\n")


class CountingTransport:
    """The socket's transport, counting the writes that reach it."""

    writes: list[bytes] = []

    def __init__(self, transport):
        self._transport = transport

    def write(self, data: bytes) -> None:
        CountingTransport.writes.append(data)
        self._transport.write(data)

    def __getattr__(self, name: str):
        return getattr(self._transport, name)


class CountedProtocol(CoalescingHttpToolsProtocol):
    def connection_made(self, transport) -> None:
        super().connection_made(CountingTransport(transport))


def test_a_plain_answer_reaches_the_socket_in_one_write():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, http=CountedProtocol, log_level="error", lifespan="off")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.02)
    try:
        request = b"POST /echo HTTP/1.1\r\nhost: x\r\ncontent-length: 2\r\n\r\nok"
        with socket.create_connection(("127.0.0.1", port), timeout=5) as c:
            for _ in range(20):  # on one keep-alive connection
                c.sendall(request)
                answer = b""
                while not answer.endswith(b"echo:ok"):
                    answer += c.recv(65536)
        assert len(CountingTransport.writes) == 20
        assert all(
            w.startswith(b"HTTP/1.1 200 OK\r\n") and w.endswith(b"\r\n\r\necho:ok") for w in CountingTransport.writes
        )
    finally:
        server.should_exit = True
        thread.join(5)


def test_bytes_that_are_not_http_get_a_json_400(server_port):
    import json

    answer = exchange(server_port, b"\x16\x03\x01\x02\x00 hello, not http\r\n\r\n", b"}")
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 400 Bad Request\r\n") and b"content-type: application/json" in head
    assert json.loads(body)["error"].endswith("not an HTTP/1.1 request")
