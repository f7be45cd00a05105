"""The retraining trigger service as a real process on 127.0.0.1 (``Trigger``), with a tiny stand-in
for the training pipeline (``FAKE_PIPELINE``) that records its arguments and prints what
``kfloop pipeline run --json`` prints."""

from __future__ import annotations

import json
import os
import signal
import sys
from pathlib import Path

import httpx

from kfloop.auth import bearer, read_token
from kfloop.events.cloudevents import make_event, to_structured
from kfloop.names import CONTROL_TOKEN_FILE, DRIFT_DETECTED
from tests.conftest import free_port
from tests.fakes.event_sink import EventSink
from tests.serving.conftest import ServerProcess

FAKE_PIPELINE = r"""
import json, os, sys, time
args = sys.argv[1:]
params = dict(args[i + 1].split("=", 1) for i in range(len(args)) if args[i] == "--param")
with open(os.environ["FAKE_RUNS"], "a") as f:
    f.write(json.dumps(params) + "\n")
release = os.environ.get("FAKE_RELEASE")
while release and not os.path.exists(release):
    time.sleep(0.05)
outcome = params["model_name"].split("-")[0]  # models named fail-* fail, gate-* do not pass the gate
if outcome == "fail":
    print("  process   FAILED", file=sys.stderr)
    print("error: data quality rule 'not_empty' failed for data: no rows", file=sys.stderr)
    sys.exit(1)
gate = {"passed": outcome != "gate", "reason": "candidate auc 0.51 is below the threshold 0.7"}
registered = params["model_name"] + ":7" if outcome != "gate" else None
print(json.dumps({"registered": registered, "gate": gate, "run_dir": "x", "log_path": "x", "seconds": 0.1}))
"""


class Trigger(ServerProcess):
    """``python -m kfloop.serving.trigger.service`` on a free port, with its home in ``tmp``; it may train
    ``new_models`` (default churn) before they have a registered version (``--new_models``)."""

    def __init__(
        self,
        tmp: Path,
        sink: EventSink,
        *args: str,
        env: dict | None = None,
        fake: bool = True,
        new_models: tuple[str, ...] = ("churn",),
    ):
        self.tmp = tmp
        port = free_port()
        env = {
            "KFLOOP_HOME": str(tmp / "home"),
            "HOME": str(tmp),
            "K_SINK": sink.url,
            "FAKE_RUNS": str(tmp / "runs.jsonl"),
            **(env or {}),
            "KFLOOP_KFP_HOST": "",
        }
        self.home = Path(env["KFLOOP_HOME"])
        if fake:
            script = tmp / "fake_pipeline.py"
            script.write_text(FAKE_PIPELINE)
            env["KFLOOP_TRIGGER_RUNNER_CMD"] = f"{sys.executable} {script}"
        flags = [
            "--port",
            str(port),
            "--poll_seconds",
            "0.1",
            "--retry_seconds",
            "0.05",
            "--cooldown_seconds",
            "0",
            *(["--new_models", *new_models] if new_models else []),
            *args,
        ]
        super().__init__("kfloop.serving.trigger.service", flags, port, "/healthz", env)
        try:
            self.wait_ready(30)
        except BaseException:
            self.stop()
            raise

    def post(self, event: dict, binary: bool = False, accept: str | None = "application/json") -> httpx.Response:
        """POST ``event``; with ``accept`` (default: JSON) the trigger answers its decision as JSON,
        with ``accept=None`` as Knative is answered: an empty 202, the decision in headers."""
        extra = {"accept": accept} if accept else {}
        if binary:
            headers = {f"ce-{k}": str(v) for k, v in event.items() if k not in ("data", "datacontenttype")}
            headers["content-type"] = "application/json"
            return httpx.post(
                f"{self.url}/", content=json.dumps(event["data"]), headers={**headers, **extra}, timeout=30
            )
        headers, body = to_structured(event)
        return httpx.post(f"{self.url}/", content=body, headers={**headers, **extra}, timeout=30)

    @property
    def auth(self) -> dict[str, str]:
        """The control token's header (the trigger wrote the token file in its home at start)."""
        return bearer(read_token(self.home / CONTROL_TOKEN_FILE))

    def feedback(self, body: dict, **kwargs) -> httpx.Response:
        return httpx.post(f"{self.url}/v1/feedback", json=body, headers=self.auth, timeout=30, **kwargs)

    def status(self, model: str | None = None) -> dict:
        params = {"model": model} if model else None
        return httpx.get(f"{self.url}/v1/status", params=params, headers=self.auth, timeout=10).json()

    def runs(self) -> list[dict]:
        path = self.tmp / "runs.jsonl"
        return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def kill_fake_runs(home: Path) -> None:
    for record in (home / "trigger" / "runs").glob("*/run.json"):
        try:
            os.killpg(json.loads(record.read_text())["pid"], signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass


def drift(window: int, id: str | None = None, model: str = "churn", is_drift: int = 1) -> dict:
    data = {
        "meta": {"name": "TabularDrift"},
        "data": {
            "is_drift": is_drift,
            "p_val": [0.001, 0.2],
            "threshold": 0.05,
            "window_index": window,
            "window_size": 100,
        },
        "model": model,
        "model_version": "1",
        "revision": "stable",
    }
    return make_event(DRIFT_DETECTED, "kfloop/churn-transformer", data, subject=model, id=id)
