"""``HttpPool`` against a real asyncio HTTP server on 127.0.0.1 whose answers each test scripts:
every framing (length, chunked, close-delimited), keep-alive reuse, a stale keep-alive connection,
a server that closes mid-answer, no server, a slow server, and the connection limit."""

from __future__ import annotations

import asyncio

import pytest

from kfloop.serving.model_servers.http_pool import HttpPool, UpstreamClosed, UpstreamUnreachable
from tests.conftest import free_port

OK = b'HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 11\r\n\r\n{"ok": 1.5}'


class ScriptedServer:
    """Reads one request at a time (headers + content-length body) and answers with ``answer(request)``:
    bytes to write, or None to close the connection without answering. Counts connections."""

    def __init__(self, answer, close_after_answer: bool = False, delay: float = 0.0):
        self.answer, self.close_after_answer, self.delay = answer, close_after_answer, delay
        self.connections = self.open = self.most_open = 0
        self.requests: list[bytes] = []

    async def __aenter__(self) -> str:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        return f"http://127.0.0.1:{self.server.sockets[0].getsockname()[1]}"

    async def __aexit__(self, *exc) -> None:
        self.server.close()
        await self.server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        self.open += 1
        self.most_open = max(self.most_open, self.open)
        try:
            while True:
                try:
                    head = await reader.readuntil(b"\r\n\r\n")
                except (asyncio.IncompleteReadError, ConnectionError):
                    return
                length = next(
                    int(line.split(b":")[1])
                    for line in head.split(b"\r\n")
                    if line.lower().startswith(b"content-length:")
                )
                request = head + await reader.readexactly(length)
                self.requests.append(request)
                if self.delay:
                    await asyncio.sleep(self.delay)
                answer = self.answer(request)
                if answer is None:
                    return
                writer.write(answer)
                await writer.drain()
                if self.close_after_answer:
                    return
        finally:
            self.open -= 1
            writer.close()


def run(coro):
    return asyncio.run(coro)


def test_a_post_sends_the_body_and_headers_and_reads_the_answer():
    async def main():
        server = ScriptedServer(lambda _: OK)
        async with server as url:
            pool = HttpPool(url)
            response = await pool.post(
                "/v1/models/m:predict",
                b'{"instances": [[1]]}',
                {"content-type": "application/json", "x-request-id": "r-1"},
                timeout=5,
            )
            await pool.aclose()
        return server, response

    server, response = run(main())
    assert response.status == 200 and response.body == b'{"ok": 1.5}'
    assert response.headers["content-type"] == "application/json"
    [request] = server.requests
    assert request.startswith(b"POST /v1/models/m:predict HTTP/1.1\r\n")
    assert b"\r\nx-request-id: r-1\r\n" in request and b"\r\ncontent-length: 20\r\n" in request
    assert request.endswith(b'\r\n\r\n{"instances": [[1]]}')


@pytest.mark.parametrize(
    "answer",
    [
        b'HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\r\n{"ok"\r\n6\r\n: 1.5}\r\n0\r\n\r\n',
        b'HTTP/1.1 200 OK\r\nconnection: close\r\n\r\n{"ok": 1.5}',
    ],
    ids=["chunked", "close-delimited"],
)
def test_chunked_and_close_delimited_answers(answer):
    async def main():
        server = ScriptedServer(lambda _: answer, close_after_answer=b"connection: close" in answer)
        async with server as url:
            pool = HttpPool(url)
            first = await pool.post("/", b"{}", {}, timeout=5)
            second = await pool.post("/", b"{}", {}, timeout=5)
            await pool.aclose()
        return server, first, second

    server, first, second = run(main())
    assert first.body == second.body == b'{"ok": 1.5}'
    assert server.connections == (2 if b"connection: close" in answer else 1)


def test_keep_alive_connections_are_reused_and_bounded():
    async def main():
        server = ScriptedServer(lambda _: OK, delay=0.02)
        async with server as url:
            pool = HttpPool(url, max_connections=3)
            answers = await asyncio.gather(*(pool.post("/", b"{}", {}, timeout=5) for _ in range(12)))
            again = await asyncio.gather(*(pool.post("/", b"{}", {}, timeout=5) for _ in range(3)))
            await pool.aclose()
        return server, answers + again

    server, answers = run(main())
    assert [a.status for a in answers] == [200] * 15
    assert server.connections == 3 and server.most_open == 3


def test_a_keep_alive_connection_the_server_closed_is_replaced_once():
    """The server answers, keeps nothing open (no ``connection: close`` header): the next request
    finds the pooled connection closed and goes out again on a new one."""

    async def main():
        server = ScriptedServer(lambda _: OK, close_after_answer=True)
        async with server as url:
            pool = HttpPool(url)
            first = await pool.post("/", b"{}", {}, timeout=5)
            await asyncio.sleep(0.05)  # the server's close arrives while the connection is idle
            second = await pool.post("/", b"{}", {}, timeout=5)
            await pool.aclose()
        return server, first, second

    server, first, second = run(main())
    assert first.status == second.status == 200
    assert server.connections == 2


def failed_post(server: ScriptedServer, error: type[Exception], match: str, headers: dict | None = None):
    """POST once to ``server``, expecting ``error``; returns the server (what it received)."""

    async def main():
        async with server as url:
            pool = HttpPool(url)
            with pytest.raises(error, match=match):
                await pool.post("/", b"{}", headers or {}, timeout=5)
            await pool.aclose()

    run(main())
    return server


def test_a_server_that_closes_without_answering_fails_the_request():
    server = failed_post(ScriptedServer(lambda _: None), UpstreamClosed, "closed before a whole answer")
    assert len(server.requests) == 1  # a fresh connection's failure is not sent again


def test_a_half_sent_answer_fails_the_request():
    half = b'HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\n{"par'
    failed_post(ScriptedServer(lambda _: half, close_after_answer=True), UpstreamClosed, "closed before")


def test_nothing_listening_is_unreachable_after_the_retries():
    async def main():
        pool = HttpPool(f"http://127.0.0.1:{free_port()}", connect_retries=2)
        with pytest.raises(UpstreamUnreachable, match="cannot connect to 127.0.0.1"):
            await pool.post("/", b"{}", {}, timeout=5)

    run(main())


def test_a_slow_answer_times_out_and_its_connection_is_not_reused():
    async def main():
        slow = ScriptedServer(lambda _: OK, delay=0.5)
        async with slow as url:
            pool = HttpPool(url)
            with pytest.raises(asyncio.TimeoutError):
                await pool.post("/", b"{}", {}, timeout=0.1)
            slow.delay = 0
            answer = await pool.post("/", b"{}", {}, timeout=5)
            await pool.aclose()
        return slow, answer

    server, answer = run(main())
    assert answer.status == 200 and server.connections == 2


def test_headers_with_line_breaks_are_refused():
    server = failed_post(
        ScriptedServer(lambda _: OK), ValueError, "line break", headers={"x-request-id": "a\r\nx-injected: 1"}
    )
    assert server.requests == []


def test_only_http_urls_are_accepted():
    with pytest.raises(ValueError, match="expected http://host"):
        HttpPool("ftp://127.0.0.1:21")
