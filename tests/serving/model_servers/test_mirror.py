"""Shadow traffic on a cluster, with real processes on 127.0.0.1: a stable predictor (version 1), a drift
transformer in front of it that polls the mirror state on the moto S3 server, and a second real predictor
(version 2) as the shadow candidate; a slow, a dead and a 5xx-answering candidate are small servers here.

- the share mirrored is within binomial bounds and every candidate answer is recorded under the client's
  request id; the client's answers are byte-identical with mirroring on and off;
- a dead or slow candidate never slows or fails a client (in flight bounded, the rest dropped, counted);
- blue-green on the kubernetes target (the fake API server; stable traffic from a fake Prometheus) bakes
  the candidate on the mirrored traffic and promotes it, or rolls back one that answers 5xx; both remove
  the shadow InferenceService and the mirror state.
"""

from __future__ import annotations

import json
import math
import threading
import time
import uuid

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from kfloop.config import Settings
from kfloop.rollout import actions as rollout
from kfloop.rollout.analysis import Thresholds, plan_for
from kfloop.rollout.controller import run_analysis
from kfloop.rollout.mirror import MirrorState, ShadowRecords, clear_state, read_state, write_state
from kfloop.rollout.sources import PrometheusSource
from kfloop.rollout.targets.kubernetes import KubernetesTarget
from kfloop.store.objects import open_store
from kfloop.store.registry import Registry
from kfloop.training.samples import churn
from tests.conftest import free_port, wait_for
from tests.fakes.bundles import trained_bundle
from tests.fakes.kube_api import NS, FakeKubeAPI
from tests.fakes.loopback_http import LoopbackServer, QuietHandler, send_json
from tests.fakes.prometheus import FakePrometheus, sample
from tests.serving.conftest import ServerProcess

pytestmark = pytest.mark.processes

MODEL = "churn"
POLL = 0.2  # the transformer's --mirror_poll_seconds
IN_FLIGHT = 4


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    df = churn(1500, seed=1)
    out = trained_bundle(
        tmp_path_factory.mktemp("mirror"), df, 1200, {"n_estimators": 20, "max_depth": 3, "nthread": 1}
    )
    return out, df.drop(columns=["churn"]).iloc[:200]


@pytest.fixture(scope="module")
def settings(s3_server, tmp_path_factory) -> Settings:
    return Settings(
        home=tmp_path_factory.mktemp("home"),
        s3_endpoint=s3_server,
        s3_access_key="test-access",
        s3_secret_key="test-secret",
        s3_bucket=f"kfloop-{uuid.uuid4().hex[:12]}",
    )


def _server(module: str, *args: str, env: dict | None = None) -> ServerProcess:
    port = free_port()
    argv = ["--model_name", MODEL, "--http_port", str(port), "--enable_grpc", "false", *args]
    return ServerProcess(module, argv, port, f"/v2/models/{MODEL}/ready", env)


@pytest.fixture(scope="module")
def servers(bundle, settings):
    root, _ = bundle
    store = open_store(settings)
    registry = Registry(store)
    for _ in range(2):
        registry.register(MODEL, root)
    predictor = "kfloop.serving.model_servers.predictor"
    started = {
        "stable": _server(predictor, "--model_dir", str(root), "--model_version", "1"),
        "candidate": _server(predictor, "--model_dir", str(root), "--model_version", "2"),
    }
    try:
        started["stable"].wait_ready()
        started["transformer"] = _server(
            "kfloop.serving.model_servers.transformer",
            "--model_dir",
            str(root),
            "--model_version",
            "1",
            "--predictor_host",
            f"127.0.0.1:{started['stable'].port}",
            "--drift_backend",
            "scipy",
            "--capture_flush_seconds",
            "0.2",
            "--mirror_poll_seconds",
            str(POLL),
            "--mirror_flush_seconds",
            "0.2",
            "--mirror_in_flight",
            str(IN_FLIGHT),
            "--mirror_timeout",
            "3",
            "--shutdown_seconds",
            "3",
            env=settings.storage_env(),
        )
        for server in started.values():
            server.wait_ready()
        yield started, store, registry
    finally:
        for server in started.values():
            server.stop()


class Candidate(LoopbackServer):
    """A stand-in candidate on 127.0.0.1: answers after ``delay`` seconds with ``status``."""

    def __init__(self, status: int = 200, delay: float = 0.0):
        self.status, self.delay, self.received = status, delay, 0
        me = self

        class Handler(QuietHandler):
            def do_POST(self):
                self.rfile.read(int(self.headers.get("content-length") or 0))
                me.received += 1
                time.sleep(me.delay)
                send_json(self, me.status, {"error": "boom"} if me.status >= 400 else {"predictions": [[0.5, 0.5]]})

        super().__init__(Handler)


def _instances(rows, n: int, start: int = 0) -> list[dict]:
    records = json.loads(rows.to_json(orient="records"))
    return [{"instances": [records[(start + i) % len(records)]]} for i in range(n)]


def _send(url: str, bodies: list[dict], prefix: str) -> list[httpx.Response]:
    with httpx.Client(timeout=30) as client:
        return [
            client.post(
                f"{url}/v1/models/{MODEL}:predict", content=json.dumps(b), headers={"x-request-id": f"{prefix}-{i}"}
            )
            for i, b in enumerate(bodies)
        ]


def _mirror(store, version: int, percent: int, url: str) -> None:
    """Set the mirror state and wait until the transformer has surely polled it."""
    write_state(store, MirrorState(MODEL, version, percent, url))
    time.sleep(POLL * 4)


def _stop_mirror(store) -> None:
    clear_state(store, MODEL)
    time.sleep(POLL * 4)


def _mirrored(transformer) -> dict[tuple[str, str], float]:
    text = httpx.get(f"{transformer.url}/metrics", timeout=5).text
    return {
        (s.labels["version"], s.labels["result"]): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name == "kfloop_transformer_mirrored_total" and s.labels.get("model_name") == MODEL
    }


def _records(store, version: int, prefix: str) -> list[dict]:
    return [r for r in ShadowRecords(store, MODEL).records(version, "") if r["request_id"].startswith(prefix + "-")]


def test_a_share_is_mirrored_within_binomial_bounds_and_recorded_under_the_clients_request_ids(servers, bundle):
    started, store, _ = servers
    transformer, n, percent = started["transformer"], 400, 30
    before = _mirrored(transformer)
    _mirror(store, 2, percent, started["candidate"].url)
    try:
        answers = _send(transformer.url, _instances(bundle[1], n), "share")
    finally:
        _stop_mirror(store)
    assert all(a.status_code == 200 for a in answers)
    after = wait_for(lambda: (c := _mirrored(transformer)) and c.get(("2", "mirrored"), 0) > 0 and c, what="counts")
    mirrored = after.get(("2", "mirrored"), 0) - before.get(("2", "mirrored"), 0)
    sigma = math.sqrt(n * percent / 100 * (1 - percent / 100))
    assert abs(mirrored - n * percent / 100) <= 4 * sigma, mirrored
    records = wait_for(lambda: (r := _records(store, 2, "share")) and len(r) == mirrored and r, what="records")
    sent = {f"share-{i}": a for i, a in enumerate(answers)}
    assert len({r["request_id"] for r in records}) == len(records)
    for record in records:
        client = sent[record["request_id"]]
        assert record["shadow"]["version"] == 2 and record["shadow"]["status"] == 200
        assert record["primary"]["response"] == client.json()  # the answer this client got
        assert record["shadow"]["response"]["predictions"] == client.json()["predictions"]  # same booster
        assert record["request"] == json.loads(client.request.content)
    assert after.get(("2", "failed"), 0) == before.get(("2", "failed"), 0)


def test_the_clients_answers_are_byte_identical_with_mirroring_on_and_off(servers, bundle):
    started, store, _ = servers
    bodies = _instances(bundle[1], 40, start=7)
    off = _send(started["transformer"].url, bodies, "same")
    _mirror(store, 2, 100, started["candidate"].url)
    try:
        on = _send(started["transformer"].url, bodies, "same")
    finally:
        _stop_mirror(store)
    assert [a.content for a in on] == [a.content for a in off]
    assert [a.headers["x-request-id"] for a in on] == [a.headers["x-request-id"] for a in off]
    wait_for(lambda: len(_records(store, 2, "same")) == 40, what="40 records")


@pytest.mark.parametrize("kind", ["dead", "slow"])
def test_a_dead_or_slow_candidate_never_slows_or_fails_a_client(servers, bundle, kind):
    started, store, _ = servers
    transformer, bodies = started["transformer"], _instances(bundle[1], 40, start=3)
    version = 5 if kind == "dead" else 6  # counters of their own
    candidate = Candidate(delay=2.0) if kind == "slow" else None
    url = candidate.url if candidate else f"http://127.0.0.1:{free_port()}"
    start = time.perf_counter()
    off = _send(transformer.url, bodies, kind)
    off_seconds = time.perf_counter() - start
    _mirror(store, version, 100, url)
    try:
        start = time.perf_counter()
        on = _send(transformer.url, bodies, kind)
        on_seconds = time.perf_counter() - start
    finally:
        _stop_mirror(store)
        if candidate:
            candidate.close()
    assert [a.content for a in on] == [a.content for a in off]
    # 40 sequential requests: with a candidate that takes 2 s each, waiting on it would take >= 80 s
    assert on_seconds < max(3 * off_seconds, off_seconds + 2.0), (on_seconds, off_seconds)
    counts = wait_for(
        lambda: (
            (c := _mirrored(transformer)) and sum(v for (ver, _), v in c.items() if ver == str(version)) == 40 and c
        ),
        timeout=15,
        what="every request counted",
    )
    failed, dropped = counts.get((str(version), "failed"), 0), counts.get((str(version), "dropped"), 0)
    if kind == "dead":
        assert failed + dropped == 40 and failed > 0
        records = wait_for(lambda: _records(store, version, kind), what="records of failures")
        assert all("error" in r["shadow"] for r in records)
    else:
        assert dropped >= 40 - 2 * IN_FLIGHT  # at most IN_FLIGHT wait at once; the rest are not sent


# -- blue-green on the kubernetes target ---------------------------------------------------------------


def stable_traffic(query: str):
    """The stable revision's traffic as Prometheus would answer: 300 requests, no 5xx, p99 20 ms."""
    return sample(None if "5.." in query else 20 if "histogram_quantile" in query else 300)


@pytest.mark.parametrize("candidate_kind", ["good", "5xx"])
def test_blue_green_on_kubernetes_bakes_on_mirrored_traffic(servers, bundle, candidate_kind):
    started, store, registry = servers
    fake, prometheus = FakeKubeAPI(), FakePrometheus(stable_traffic)
    bad = Candidate(status=500) if candidate_kind == "5xx" else None
    fake.addresses["churn-shadow"] = bad.url if bad else started["candidate"].url
    fake.auto_reconcile = True
    stop, traffic = threading.Event(), []

    def send():
        bodies = _instances(bundle[1], 200, start=11)
        with httpx.Client(timeout=30) as client:
            i = 0
            while not stop.is_set():
                response = client.post(f"{started['transformer'].url}/v1/models/{MODEL}:predict", json=bodies[i % 200])
                traffic.append(response.status_code)
                i += 1
                time.sleep(0.01)

    thread = threading.Thread(target=send, daemon=True)
    try:
        target = KubernetesTarget(namespace=NS, api=fake.api(), poll_seconds=0.05, store=store)
        rollout.deploy(registry, target, f"{MODEL}:1")
        fake.reconcile(MODEL)
        thread.start()
        source = PrometheusSource(prometheus.url, NS, MODEL, store)
        plan = plan_for("blue-green", hold_requests=60, poll_seconds=0.3, timeout_seconds=60, data_wait_seconds=5)
        result = run_analysis(
            registry, target, source, MODEL, f"{MODEL}:2", plan, Thresholds(min_predictions=50), store
        )
    finally:
        stop.set()
        if thread.is_alive():
            thread.join(10)
        prometheus.close()
        fake.close()
        if bad:
            bad.close()
    expected = "promoted" if candidate_kind == "good" else "rolled-back"
    assert result["outcome"] == expected, result
    assert traffic and set(traffic) == {200}  # no client saw the candidate
    assert (NS, "churn-shadow") not in fake.objects and read_state(store, MODEL) is None
    assert any(r["method"] == "DELETE" and r["path"].endswith("/churn-shadow") for r in fake.requests)
    canary = result["decisions"][-1]["stats"]["canary"]
    assert canary["requests"] >= 50
    if expected == "promoted":
        assert canary["predictions"] >= 50 and registry.get(MODEL, 2).stage == "production"
    else:
        assert "error_rate canary 1.0" in result["reason"] and registry.get(MODEL, 2).stage == "rejected"
