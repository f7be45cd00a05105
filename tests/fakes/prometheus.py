"""Prometheus's HTTP API on 127.0.0.1, for the rollout tests that read traffic from it.

``FakePrometheus(answer)`` answers ``GET /api/v1/query`` with ``answer(query)``, a ``(status, JSON
document)`` pair for the PromQL text, and records every query it was asked (``queries``); any other
path is a 404. ``vector(*values)`` is the document of an instant vector with one sample per value
(none: an empty result), ``sample(value)`` of one sample or, for None, of no sample.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

Answer = tuple[int, dict]


def vector(*values) -> Answer:
    return 200, {
        "status": "success",
        "data": {"resultType": "vector", "result": [{"metric": {}, "value": [time.time(), str(v)]} for v in values]},
    }


def sample(value) -> Answer:
    return vector() if value is None else vector(value)


class FakePrometheus:
    def __init__(self, answer: Callable[[str], Answer]):
        self.queries: list[str] = []
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):
                url = urlsplit(self.path)
                query = parse_qs(url.query).get("query", [""])[0]
                fake.queries.append(query)
                status, doc = answer(query) if url.path == "/api/v1/query" else (404, {"status": "error"})
                body = json.dumps(doc).encode()
                self.send_response(status)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
