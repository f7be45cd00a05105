"""Prometheus's HTTP API on 127.0.0.1, for the rollout tests that read traffic from it.

``FakePrometheus(answer)`` answers ``GET /api/v1/query`` with ``answer(query)``, a ``(status, JSON
document)`` pair for the PromQL text, and records every query it was asked (``queries``); any other
path is a 404. ``vector(*values)`` is the document of an instant vector with one sample per value
(none: an empty result), ``sample(value)`` of one sample or, for None, of no sample.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from urllib.parse import parse_qs, urlsplit

from tests.fakes.loopback_http import LoopbackServer, QuietHandler, send_json

Answer = tuple[int, dict]


def vector(*values) -> Answer:
    return 200, {
        "status": "success",
        "data": {"resultType": "vector", "result": [{"metric": {}, "value": [time.time(), str(v)]} for v in values]},
    }


def sample(value) -> Answer:
    return vector() if value is None else vector(value)


class FakePrometheus(LoopbackServer):
    def __init__(self, answer: Callable[[str], Answer]):
        self.queries: list[str] = []
        fake = self

        class Handler(QuietHandler):
            def do_GET(self):
                url = urlsplit(self.path)
                query = parse_qs(url.query).get("query", [""])[0]
                fake.queries.append(query)
                send_json(self, *(answer(query) if url.path == "/api/v1/query" else (404, {"status": "error"})))

        super().__init__(Handler)
