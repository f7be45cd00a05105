"""The gateway's limits on client connections, against a real gateway (uvicorn, its own protocol
class and middlewares) on 127.0.0.1 with raw sockets: a body over the limit is a 413 without reading
it all, a body too slow a 408, headers too slow a closed connection, connections over the cap a
503, and each of them one log line; a pooled connection the revision reset is retried once on a
fresh one. Bounded loops, a few seconds."""

from __future__ import annotations

import asyncio
import json
import logging
import socket
import threading
import time

import aiohttp
import httpx
import pytest

from kfloop.config import Settings
from kfloop.serving.local.controller import LocalController
from kfloop.serving.local.gateway import Gateway, bind
from tests.conftest import free_port

pytestmark = pytest.mark.processes  # servers on 127.0.0.1 (in threads)

TOKEN = "t" * 43


@pytest.fixture
def gateway(tmp_path):
    """A gateway with no model served, small limits, in a thread; its log records."""
    controller = LocalController(Settings(home=tmp_path / "home"), use_transformer=False)
    gw = Gateway(controller, token=TOKEN, max_body_bytes=10_000, header_seconds=0.5, body_seconds=0.5, max_clients=20)
    port = free_port()
    server = gw.server(port)
    sock = bind(port)
    thread = threading.Thread(target=lambda: asyncio.run(server.serve(sockets=[sock])), daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            httpx.get(url + "/", timeout=1)
            break
        except httpx.HTTPError:
            time.sleep(0.05)
    yield gw, port, url
    server.should_exit = True
    thread.join(10)
    sock.close()


def raw(port: int, data: bytes) -> socket.socket:
    s = socket.create_connection(("127.0.0.1", port), timeout=5)
    s.sendall(data)
    return s


def read_all(s: socket.socket, timeout: float = 5) -> bytes:
    s.settimeout(timeout)
    out = b""
    try:
        while chunk := s.recv(65536):
            out += chunk
    except (TimeoutError, ConnectionResetError):
        pass
    return out


EVENT_HEAD = (
    b"POST /kfloop/v1/events HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
    b"Authorization: Bearer " + TOKEN.encode() + b"\r\n"
)


def test_an_oversized_chunked_body_is_a_413_without_reading_it_all(gateway):
    _, port, url = gateway
    s = raw(port, b"POST /v1/models/churn:predict HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n")
    for _ in range(30):  # 30 x 1 KB chunks: over the 10,000-byte limit
        try:
            s.sendall(b"400\r\n" + b"x" * 1024 + b"\r\n")
        except OSError:
            break
    answer = read_all(s)
    assert answer.startswith(b"HTTP/1.1 413") and b"over the limit of 10000 bytes" in answer
    assert httpx.post(url + "/v1/models/churn:predict", content=b"x" * 10_001).status_code == 413


def test_a_body_slower_than_the_deadline_is_a_408_and_one_log_line(gateway, caplog):
    _, port, url = gateway
    caplog.set_level(logging.WARNING)
    s = raw(port, EVENT_HEAD + b"Content-Length: 100\r\n\r\n" + b'{"specversion"')  # and then nothing
    started = time.monotonic()
    answer = read_all(s)
    assert answer.startswith(b"HTTP/1.1 408") and b"did not arrive within 0.5 s" in answer, answer
    assert time.monotonic() - started < 3
    lines = [r for r in caplog.records if "did not arrive" in r.getMessage()]
    assert len(lines) == 1 and lines[0].exc_info is None
    assert httpx.get(url + "/v2/health/live", timeout=5).status_code == 200


def test_headers_slower_than_the_deadline_close_the_connection(gateway, caplog):
    _, port, url = gateway
    caplog.set_level(logging.WARNING)
    slow = [raw(port, b"GET / HTTP/1.1\r\nHost: x\r\n") for _ in range(10)]  # never the blank line
    started = time.monotonic()
    assert all(read_all(s) == b"" for s in slow)  # closed by the gateway
    assert time.monotonic() - started < 3
    assert len([r for r in caplog.records if "no complete request headers" in r.getMessage()]) == 10
    keep_alive = httpx.Client()
    assert keep_alive.get(url + "/").status_code == 200
    time.sleep(0.8)  # a kept-alive idle connection is not cut by the header deadline mid-request
    assert keep_alive.get(url + "/").status_code == 200


def test_connections_over_the_cap_get_a_503(gateway):
    _, port, url = gateway
    held = [raw(port, EVENT_HEAD + b"Content-Length: 50\r\n\r\n{") for _ in range(25)]
    answers = [read_all(s, timeout=3) for s in held]
    statuses = [a[:12] for a in answers]
    assert sum(1 for s in statuses if s == b"HTTP/1.1 503") >= 5, statuses
    assert all(s in (b"HTTP/1.1 503", b"HTTP/1.1 408") for s in statuses), statuses
    for answer in answers:  # both as {"error": ...} JSON
        head, _, body = answer.partition(b"\r\n\r\n")
        assert b"content-type: application/json" in head.lower() and json.loads(body)["error"], answer
    assert httpx.get(url + "/", timeout=5).status_code == 200  # and it serves again


def test_bytes_that_are_not_http_get_a_json_400(gateway):
    _, port, url = gateway
    answer = read_all(raw(port, b"\x16\x03\x01 not http at all\r\n\r\n"))
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 400") and b"application/json" in head
    assert "not an HTTP/1.1 request" in json.loads(body)["error"]
    assert httpx.get(url + "/", timeout=5).status_code == 200


def test_a_reset_pooled_connection_is_retried_once_on_a_fresh_one(gateway):
    gw, _, _ = gateway
    backend_port, accepted = free_port(), []
    listener = socket.create_server(("127.0.0.1", backend_port))

    def serve() -> None:  # the first connection is reset after its request; the next ones answer
        while len(accepted) < 2:
            conn, _ = listener.accept()
            accepted.append(conn)
            conn.recv(65536)
            if len(accepted) == 1:
                conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
                conn.close()
            else:
                conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{}")
                conn.close()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()

    async def send() -> tuple[int, bytes]:
        gw.client = aiohttp.ClientSession()
        gw.fresh = aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True))
        try:
            answer = await gw._send("POST", f"http://127.0.0.1:{backend_port}/v1/models/m:predict", [], b"{}")
            return answer.status, answer.content
        finally:
            await gw.client.close()
            await gw.fresh.close()

    assert asyncio.run(send()) == (200, b"{}")
    assert len(accepted) == 2
    thread.join(5)
    listener.close()
