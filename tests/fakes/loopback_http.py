"""What the tests' small HTTP fakes share: a threaded server on 127.0.0.1 and a JSON answer.

``LoopbackServer(Handler)`` serves a ``BaseHTTPRequestHandler`` class on a free port from a daemon
thread (``url``, ``close()``); ``send_json(handler, status, doc)`` writes ``doc`` as the answer with
its content type and length. A handler's ``log_message`` is silenced by ``QuietHandler``.
"""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class QuietHandler(BaseHTTPRequestHandler):
    def log_message(self, *args):
        pass


def send_json(handler: BaseHTTPRequestHandler, status: int, doc) -> None:
    body = json.dumps(doc).encode()
    handler.send_response(status)
    handler.send_header("content-type", "application/json")
    handler.send_header("content-length", str(len(body)))
    handler.end_headers()
    handler.wfile.write(body)


class LoopbackServer:
    def __init__(self, handler: type[BaseHTTPRequestHandler], poll_interval: float = 0.5):
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": poll_interval}, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
