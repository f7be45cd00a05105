"""A CloudEvents sink on 127.0.0.1 that keeps every event it receives (binary or structured)."""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from kfloop.events.cloudevents import (
    parse_event,
)


class EventSink:
    """A CloudEvents receiver on 127.0.0.1 that keeps what it gets (the trigger's K_SINK)."""

    def __init__(self):
        self.events: list[dict] = []
        self.authorizations: list[str | None] = []  # each POST's Authorization header
        sink = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                sink.events.append(parse_event(dict(self.headers), body))
                sink.authorizations.append(self.headers.get("Authorization"))
                self.send_response(202)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def of_type(self, type: str) -> list[dict]:
        return [e for e in self.events if e["type"] == type]

    def close(self):
        self.server.shutdown()
        self.server.server_close()
