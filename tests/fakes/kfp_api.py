"""A fake Kubeflow Pipelines v2beta1 REST server on 127.0.0.1 that answers the calls ``kfp.Client``
(kfp 2.17.0) makes, and records them."""

from __future__ import annotations

import json
import threading
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

API = "/apis/v2beta1"

NOW = "2025-01-01T00:00:00Z"


class FakeKfpApi:
    """A Kubeflow Pipelines v2beta1 API on 127.0.0.1 that records every request.

    ``GET /runs/{id}`` answers the states of ``run_states`` in turn (the last one repeats),
    so a test chooses how the run ends."""

    def __init__(self, run_states=("RUNNING", "SUCCEEDED"), experiments=()):
        self.requests: list[dict] = []
        self.errors: list[str] = []  # exceptions raised while answering
        self.experiments = [dict(e) for e in experiments]
        self.runs: dict[str, dict] = {}
        self.run_states = list(run_states)
        self._polls: dict[str, int] = {}
        self._lock = threading.Lock()
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler_class())
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> FakeKfpApi:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()
        self._thread.join(timeout=5)
        assert not self.errors, self.errors

    def calls(self, method: str, path: str) -> list[dict]:
        return [r for r in self.requests if r["method"] == method and r["path"] == path]

    # -- the API --------------------------------------------------------------------------------

    def answer(self, method: str, path: str, query: dict, body) -> tuple[int, dict]:
        if (method, path) == ("GET", f"{API}/healthz"):
            return 200, {"multi_user": False, "pipeline_store": "database"}
        if (method, path) == ("GET", f"{API}/experiments"):
            return 200, self._list_experiments(query)
        if (method, path) == ("POST", f"{API}/experiments"):
            experiment = {**body, "experiment_id": str(uuid.uuid4()), "created_at": NOW, "storage_state": "AVAILABLE"}
            self.experiments.append(experiment)
            return 200, experiment
        if (method, path) == ("POST", f"{API}/runs"):
            run = {
                **body,
                "run_id": str(uuid.uuid4()),
                "state": "PENDING",
                "created_at": NOW,
                "storage_state": "AVAILABLE",
            }
            self.runs[run["run_id"]] = run
            return 200, run
        if method == "GET" and path.startswith(f"{API}/runs/") and path[len(API) + 6 :] in self.runs:
            run_id = path[len(API) + 6 :]
            polls = self._polls[run_id] = self._polls.get(run_id, -1) + 1
            self.runs[run_id]["state"] = self.run_states[min(polls, len(self.run_states) - 1)]
            return 200, self.runs[run_id]
        return 404, {"error": f"{method} {path} not found", "code": 5, "message": f"{method} {path} not found"}

    def _list_experiments(self, query: dict) -> dict:
        found = self.experiments
        if "filter" in query:  # kfp filters by display_name EQUALS (enum value 1) <name>
            for p in json.loads(query["filter"][0])["predicates"]:
                if (p["operation"], p["key"]) not in ((1, "display_name"), ("EQUALS", "display_name")):
                    raise ValueError(f"unexpected filter predicate {p}")
                found = [e for e in found if e["display_name"] == p["stringValue"]]
        return {"experiments": found, "total_size": len(found)} if found else {}  # gRPC gateway omits empty lists

    def _handler_class(self):
        api = self

        class Handler(BaseHTTPRequestHandler):
            def _serve(self, method: str) -> None:
                url = urlsplit(self.path)
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length) if length else b""
                body = json.loads(raw) if raw else None
                query = parse_qs(url.query)
                with api._lock:
                    api.requests.append({"method": method, "path": url.path, "query": query, "body": body})
                    try:
                        status, doc = api.answer(method, url.path, query, body)
                    except Exception as e:  # noqa: BLE001 - a fake-server bug must fail the test, not hang it
                        api.errors.append(repr(e))
                        status, doc = 500, {"error": repr(e), "code": 13, "message": repr(e)}
                data = json.dumps(doc).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self):
                self._serve("GET")

            def do_POST(self):
                self._serve("POST")

            def log_message(self, *args):
                pass

        return Handler
