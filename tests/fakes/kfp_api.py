"""A fake Kubeflow Pipelines v2beta1 REST server on 127.0.0.1 that answers the calls ``kfp.Client``
(kfp 2.17.0) makes, and records them: health, experiments, runs, and recurring runs (create, list
with ``experiment_id`` and page tokens, get, delete)."""

from __future__ import annotations

import json
import threading
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

from tests.fakes.loopback_http import send_json

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
        self.recurring_runs: dict[str, dict] = {}  # in creation order
        self.page_size_cap = 2  # list pages hold at most this many, so clients must follow next_page_token
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
        recurring = f"{API}/recurringruns"
        if (method, path) == ("POST", recurring):
            if not body.get("experiment_id") or not body.get("trigger"):
                return 400, {"error": "experiment_id and trigger are required", "code": 3, "message": "bad request"}
            job = {
                **body,
                "recurring_run_id": str(uuid.uuid4()),
                "status": "ENABLED" if body.get("mode") == "ENABLE" else "DISABLED",
                "created_at": NOW,
                "updated_at": NOW,
            }
            self.recurring_runs[job["recurring_run_id"]] = job
            return 200, job
        if (method, path) == ("GET", recurring):
            return 200, self._list_recurring_runs(query)
        if path.startswith(f"{recurring}/"):
            job_id = path[len(recurring) + 1 :]
            if job_id not in self.recurring_runs:
                return 404, {"error": f"recurring run {job_id} not found", "code": 5, "message": "not found"}
            if method == "GET":
                return 200, self.recurring_runs[job_id]
            if method == "DELETE":
                del self.recurring_runs[job_id]
                return 200, {}
        return 404, {"error": f"{method} {path} not found", "code": 5, "message": f"{method} {path} not found"}

    def _list_recurring_runs(self, query: dict) -> dict:
        found = list(self.recurring_runs.values())
        if "experiment_id" in query:
            found = [j for j in found if j["experiment_id"] == query["experiment_id"][0]]
        start = int(query.get("page_token", ["0"])[0] or 0)
        size = min(int(query.get("page_size", ["10"])[0]), self.page_size_cap)
        page = found[start : start + size]
        out: dict = {}
        if page:  # gRPC gateway omits empty lists; this field's JSON name is camelCase (kfp_server_api's too)
            out = {"recurringRuns": page, "total_size": len(found)}
        if start + size < len(found):
            out["next_page_token"] = str(start + size)
        return out

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
                send_json(self, status, doc)

            def do_GET(self):
                self._serve("GET")

            def do_POST(self):
                self._serve("POST")

            def do_DELETE(self):
                self._serve("DELETE")

            def log_message(self, *args):
                pass

        return Handler
