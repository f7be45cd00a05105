"""The transformer monitors each answering version against that version's own drift reference.

Real processes on 127.0.0.1: two predictors serving ``churn:1`` (trained on today's customers) and
``churn:2`` (trained on customers 15 years older) from a LocalStore registry, a transformer started
on ``churn:1``, and between them a switchable forwarder in the test standing for a rollout that
patches ``spec.predictor`` only. Rows of older customers drift against version 1's reference and
not against version 2's; today's customers drift against version 2's. Events and captures name the
version that answered.
"""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest

from kfloop.store.objects import LocalStore
from kfloop.store.registry import Registry
from kfloop.training.samples import churn
from tests.conftest import free_port, wait_for
from tests.fakes.bundles import trained_bundle
from tests.serving.conftest import ServerProcess
from tests.serving.model_servers.test_transformer import (
    CHUNK,
    MODEL,
    Server,
    Sink,
    captures_with,
    instances,
    post_v1,
    send_rows,
    settle,
    stop_all,
)

pytestmark = pytest.mark.processes

WINDOW = 200
SHIFT = 15.0


def train_bundle(root: Path, age_shift: float, seed: int) -> Path:
    """A churn bundle with an Alibi drift reference fitted on its own training rows."""
    df = churn(2000, seed=seed, age_shift=age_shift)
    return trained_bundle(root, df, 1600, {"n_estimators": 20, "max_depth": 3, "nthread": 1}, "alibi")


class Switch:
    """An HTTP forwarder on 127.0.0.1 to one of the predictors; ``to(url)`` switches it (a rollout)."""

    def __init__(self, target: str):
        self.target, self.port = target, free_port()
        switch = self

        class Handler(BaseHTTPRequestHandler):
            def _forward(self, method: str):
                body = self.rfile.read(int(self.headers.get("content-length", 0) or 0))
                headers = {k: v for k, v in self.headers.items() if k.lower() not in ("host", "content-length")}
                answer = httpx.request(method, switch.target + self.path, content=body, headers=headers, timeout=30)
                self.send_response(answer.status_code)
                for k, v in answer.headers.items():
                    if k.lower() not in ("content-length", "transfer-encoding", "connection", "date", "server"):
                        self.send_header(k, v)
                self.send_header("content-length", str(len(answer.content)))
                self.end_headers()
                self.wfile.write(answer.content)

            def do_POST(self):
                self._forward("POST")

            def do_GET(self):
                self._forward("GET")

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def to(self, target: str) -> None:
        self.target = target

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture(scope="module")
def loop(tmp_path_factory):
    """Home with the registry (versions 1 and 2), both predictors, the switch, the sink, the transformer."""
    home = tmp_path_factory.mktemp("versions-home")
    registry = Registry(LocalStore(home))
    for version, (shift, seed) in enumerate(((0.0, 0), (SHIFT, 1)), start=1):
        record = registry.register(MODEL, train_bundle(tmp_path_factory.mktemp(f"v{version}"), shift, seed))
        assert record.version == version
    env = {"KFLOOP_HOME": str(home)}
    started: dict[str, ServerProcess] = {}
    sink, switch = Sink(), None
    try:
        for version in (1, 2):
            started[f"v{version}"] = Server(
                "kfloop.serving.model_servers.predictor", "--model_dir", f"{MODEL}:{version}", env=env
            )
        for p in started.values():
            p.wait_ready()
        switch = Switch(started["v1"].url)
        started["transformer"] = Server(
            "kfloop.serving.model_servers.transformer",
            "--model_dir",
            f"{MODEL}:1",
            "--predictor_host",
            f"127.0.0.1:{switch.port}",
            "--drift_window",
            str(WINDOW),
            "--drift_cpu_share",
            "1",
            "--sink_url",
            sink.url,
            "--outbox_backoff_max",
            "0.5",
            "--capture_flush_seconds",
            "0.2",
            "--shutdown_seconds",
            "3",
            env=env,
        ).wait_ready()
        yield {"home": home, "switch": switch, "sink": sink, **started}
    finally:
        stop_all(started.values())
        if switch is not None:
            switch.close()
        sink.down()


def events(sink: Sink) -> list[dict]:
    """The drift events' data (the transformer also emits data-quality and prediction-drift events)."""
    return [e["data"] for e in sink.received(f"kfloop/{MODEL}") if e["type"] == "io.kfloop.drift.detected"]


def test_each_answering_version_is_checked_against_its_own_reference(loop):
    transformer, sink, switch = loop["transformer"], loop["sink"], loop["switch"]
    store = LocalStore(loop["home"])

    # version 1 answers: older customers drift against its reference, the event names version 1
    send_rows(transformer, instances(churn(WINDOW, seed=10, age_shift=SHIFT)))
    wait_for(lambda: len(events(sink)) == 1, what="drift event of version 1")
    [first] = events(sink)
    assert (first["model_version"], first["data"]["is_drift"]) == ("1", 1)
    assert first["capture_location"].endswith(f"/captures/{MODEL}/1/")
    assert transformer.metric("kfloop_drift_versions") == 1

    # a rollout switches the predictor: version 2 answers; its rows are counted, not checked,
    # until its reference is loaded from the registry (off the request path)
    switch.to(loop["v2"].url)
    answer = post_v1(transformer, {"instances": instances(churn(CHUNK, seed=11, age_shift=SHIFT))}, "after-switch")
    assert answer.status_code == 200
    assert transformer.metric("kfloop_drift_rows_unreferenced_total") == CHUNK
    wait_for(lambda: transformer.metric("kfloop_drift_versions") == 2, what="version 2's reference loaded")
    records = captures_with(store, "after-switch:", CHUNK)
    assert {r["model_version"] for r in records} == {"2"}

    # older customers are what version 2 was trained on: whole windows of them raise nothing
    settle(transformer)
    windows = transformer.metric("kfloop_drift_windows_checked_total")
    pending = int(transformer.metric("kfloop_drift_window_rows"))  # version 1's window is full: version 2's
    send_rows(transformer, instances(churn(2 * WINDOW - pending, seed=12, age_shift=SHIFT)))
    settle(transformer)
    assert transformer.metric("kfloop_drift_windows_checked_total") == windows + 2
    assert len(events(sink)) == 1, "rows of version 2 were checked against another reference"

    # today's customers drift against version 2's reference: the event names version 2
    send_rows(transformer, instances(churn(WINDOW, seed=13)))
    wait_for(lambda: len(events(sink)) == 2, what="drift event of version 2")
    second = events(sink)[-1]
    assert (second["model_version"], second["data"]["is_drift"]) == ("2", 1)
    assert second["capture_location"].endswith(f"/captures/{MODEL}/2/")
    assert second["data"]["p_val_by_feature"]["age"] < second["data"]["threshold"]

    # switched back (a rollback), version 1 keeps its own window and reference: no reload
    switch.to(loop["v1"].url)
    send_rows(transformer, instances(churn(WINDOW, seed=14)))
    settle(transformer)
    assert len(events(sink)) == 2
    assert transformer.metric("kfloop_drift_rows_unreferenced_total") == CHUNK
    assert transformer.metric("kfloop_drift_versions") == 2


def test_a_version_the_registry_does_not_have_is_served_and_counted(loop):
    """A predictor naming a version the registry cannot give: answers still flow, rows are counted."""
    transformer, switch = loop["transformer"], loop["switch"]
    bogus = Server(
        "kfloop.serving.model_servers.predictor",
        "--model_dir",
        str(loop["home"] / "serving" / "bundles" / MODEL / "2"),
        "--model_version",
        "99",
    ).wait_ready()
    try:
        switch.to(bogus.url)
        before = transformer.metric("kfloop_drift_rows_unreferenced_total")
        for i in range(3):
            response = post_v1(transformer, {"instances": instances(churn(10, seed=20))}, f"bogus-{i}")
            assert response.status_code == 200
        records = captures_with(LocalStore(loop["home"]), "bogus-", 30)
        assert {r["model_version"] for r in records} == {"99"}
        assert transformer.metric("kfloop_drift_rows_unreferenced_total") == before + 30
        assert transformer.metric("kfloop_drift_versions") == 2
    finally:
        switch.to(loop["v1"].url)
        bogus.stop()
