"""The transformer's data-quality and prediction-drift signals, as real processes on 127.0.0.1: a
predictor and two transformers, one on a bundle with baseline constraints and one on a bundle
registered before them (it serves; the signals are absent), and a transformer refused at start
because its constraints are another schema's."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from kfloop.monitoring.constraints import schema_sha256
from kfloop.schema import infer_schema
from kfloop.store.bundle import CONSTRAINTS_FILE, DRIFT_DIR, STATISTICS_FILE, write_manifest
from kfloop.training.samples import churn
from tests.conftest import free_port, wait_for
from tests.fakes.bundles import trained_bundle
from tests.fakes.event_sink import EventSink
from tests.serving.conftest import ServerProcess

pytestmark = pytest.mark.processes

MODEL = "churn"
WINDOW = 100
CHUNK = 50


@pytest.fixture(scope="module")
def bundles(tmp_path_factory) -> dict[str, Path]:
    """``new``: a churn bundle as the pipeline writes it now; ``old``: the same without the baseline
    files (as registered before them); ``foreign``: constraints of another schema."""
    root = tmp_path_factory.mktemp("quality")
    df = churn(3000, seed=0)
    new = trained_bundle(root, df, 2400, {"n_estimators": 40, "max_depth": 4, "nthread": 1})
    old, foreign = root / "old", root / "foreign"
    shutil.copytree(new, old)
    for name in (STATISTICS_FILE, CONSTRAINTS_FILE):
        (old / DRIFT_DIR / name).unlink()
    write_manifest(old)
    shutil.copytree(new, foreign)
    other = infer_schema(df.drop(columns=["age"]), "churn")
    doc = json.loads((foreign / DRIFT_DIR / CONSTRAINTS_FILE).read_text())
    doc["schema_sha256"] = schema_sha256(other)
    doc["features"] = doc["features"][1:]
    (foreign / DRIFT_DIR / CONSTRAINTS_FILE).write_text(json.dumps(doc))
    write_manifest(foreign)
    return {"new": new, "old": old, "foreign": foreign}


class Server(ServerProcess):
    def __init__(self, module: str, *args: str, env: dict | None = None):
        port = free_port()
        super().__init__(
            module,
            ["--model_name", MODEL, "--http_port", str(port), "--enable_grpc", "false", *args],
            port,
            f"/v2/models/{MODEL}/ready",
            env,
        )

    def metric(self, name: str, **labels: str) -> float | None:
        text = httpx.get(f"{self.url}/metrics", timeout=5).text
        want = {"model_name": MODEL, **labels}
        for family in text_string_to_metric_families(text):
            for s in family.samples:
                if s.name == name and s.labels == want:
                    return s.value
        return None


@pytest.fixture(scope="module")
def sink():
    s = EventSink()
    yield s
    s.close()


@pytest.fixture(scope="module")
def servers(bundles, sink, tmp_path_factory):
    predictor = Server("kfloop.serving.model_servers.predictor", "--model_dir", str(bundles["new"]))
    started = {"predictor": predictor}
    try:
        for name in ("new", "old"):
            started[name] = Server(
                "kfloop.serving.model_servers.transformer",
                "--model_dir",
                str(bundles[name]),
                "--predictor_host",
                f"127.0.0.1:{predictor.port}",
                "--drift_window",
                str(WINDOW),
                "--drift_cpu_share",
                "1",
                "--outbox_backoff_max",
                "0.5",
                "--event_source",
                f"kfloop/{name}",
                "--sink_url",
                sink.url,
                env={"KFLOOP_HOME": str(tmp_path_factory.mktemp(name))},
            )
        for server in started.values():
            server.wait_ready()
        yield started
    finally:
        for server in started.values():
            server.stop()


def send(server: Server, frame) -> None:
    rows = json.loads(frame.drop(columns=["churn"]).to_json(orient="records"))
    for start in range(0, len(rows), CHUNK):
        response = httpx.post(
            f"{server.url}/v1/models/{MODEL}:predict", json={"instances": rows[start : start + CHUNK]}, timeout=30
        )
        assert response.status_code == 200, response.text


def events(sink: EventSink, source: str, type: str) -> list[dict]:
    return [e for e in sink.of_type(type) if e["source"] == source]


def test_violations_and_prediction_drift_become_events_and_metrics(servers, sink):
    new = servers["new"]
    send(new, churn(WINDOW, seed=41))  # window 0: clean
    bad = httpx.post(f"{new.url}/v1/models/{MODEL}:predict", json={"instances": [{"age": "old"}]}, timeout=30)
    assert bad.status_code == 400
    for _ in range(3):  # rejected requests (type errors) count in the next window
        httpx.post(f"{new.url}/v1/models/{MODEL}:predict", json={"instances": [[1, 2]]}, timeout=30)
    send(new, churn(WINDOW, seed=42, charges_scale=10.0))  # window 1: a unit change
    send(new, churn(WINDOW, seed=43, contract_shift=1.0))  # window 2: the predictions move
    wait_for(lambda: new.metric("kfloop_data_quality_windows_total", status="ok") == 2, what="3 windows checked")
    assert new.metric("kfloop_data_quality_windows_total", status="alert") == 1
    assert new.metric("kfloop_data_quality_violations_total", check="out_of_range") == 2
    assert new.metric("kfloop_data_quality_violations_total", check="rejected_requests") == 1
    assert new.metric("kfloop_prediction_drift_windows_total", status="alert") >= 1
    assert new.metric("kfloop_prediction_drift_p_value") < 0.01

    [violated] = wait_for(lambda: events(sink, "kfloop/new", "io.kfloop.data_quality.violated"), what="event")
    data = violated["data"]
    assert data["window_index"] == 1 and data["model"] == MODEL and data["status"] == "alert"
    checks = {(v["feature"], v["check"]) for v in data["evidence"]["violations"]}
    assert checks == {("monthly_charges", "out_of_range"), ("total_charges", "out_of_range"), ("", "rejected_requests")}
    assert data["evidence"]["rejected_requests"] == 4
    drifted = wait_for(lambda: events(sink, "kfloop/new", "io.kfloop.prediction_drift.detected"), what="event")
    assert 2 in {e["data"]["window_index"] for e in drifted}
    assert drifted[-1]["data"]["evidence"]["outputs"]["1"]["window_mean"] > 0.3


def test_a_bundle_without_constraints_serves_without_the_signals(servers, sink):
    old = servers["old"]
    send(old, churn(WINDOW, seed=44, charges_scale=10.0))
    wait_for(lambda: old.metric("kfloop_drift_windows_checked_total") == 1, what="the drift window")
    assert old.metric("kfloop_data_quality_windows_total", status="ok") is None
    assert old.metric("kfloop_data_quality_windows_total", status="alert") is None
    assert not events(sink, "kfloop/old", "io.kfloop.data_quality.violated")


def test_constraints_of_another_schema_are_refused_at_start(bundles, tmp_path):
    server = Server(
        "kfloop.serving.model_servers.transformer",
        "--model_dir",
        str(bundles["foreign"]),
        "--predictor_host",
        f"127.0.0.1:{free_port()}",
        env={"KFLOOP_HOME": str(tmp_path)},
    )
    try:
        with pytest.raises(RuntimeError, match="exited with") as failed:
            server.wait_ready(timeout=60)
        assert "constraints.json does not match the model's schema" in str(failed.value)
        assert "schema features not in the file: ['age']" in str(failed.value)
    finally:
        server.stop()
