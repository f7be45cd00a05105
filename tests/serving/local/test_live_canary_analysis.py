"""Canary analysis against real processes: ``kfloop serve`` with the drift transformer in front of every
revision (captures on the LocalStore), traffic from this test (an aiohttp loop in a thread) while
``run_analysis`` drives the gateway through ``LocalTarget`` and reads it through ``LocalStatsSource``.

- a good candidate (same data, another training seed) goes 10% -> 50% -> promoted;
- a bad one (trained on shuffled labels: its probabilities barely move) is rolled back at 10% and
  rejected, with the failed divergence check in the evidence;
- blue-green bakes a candidate on mirrored (shadow) traffic that no client sees, then switches;
- the trigger service with ``--auto_rollout canary`` rolls out the version its run registered.

The PrometheusSource is tested against a fake Prometheus HTTP API on 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import collections
import json
import os
import shutil
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path

import aiohttp
import httpx
import numpy as np
import orjson
import psutil
import pytest

from kfloop.errors import ConfigError, KfloopError
from kfloop.events.cloudevents import make_event
from kfloop.monitoring.capture import CaptureWriter, capture_record, read_captures
from kfloop.names import DRIFT_DETECTED, RETRAIN_FINISHED, ROLLOUT_DECISION
from kfloop.rollout import actions as rollout
from kfloop.rollout.analysis import RevisionStats, Thresholds, compare, plan_for
from kfloop.rollout.controller import run_analysis
from kfloop.rollout.sources import KNATIVE_LEGACY_QUERIES, LocalStatsSource, PrometheusSource, Side
from kfloop.rollout.targets.local import LocalTarget
from kfloop.schema import infer_schema
from kfloop.steps.baseline import fit_drift_baseline
from kfloop.steps.train import train_model
from kfloop.store.bundle import write_manifest
from kfloop.store.event_log import read_events
from kfloop.store.objects import LocalStore
from kfloop.store.registry import Registry
from kfloop.training.samples import churn
from tests.conftest import free_port, wait_for
from tests.fakes.event_sink import EventSink
from tests.fakes.prometheus import FakePrometheus, vector
from tests.serving.local.conftest import ServeProcess
from tests.serving.trigger_process import Trigger

pytestmark = pytest.mark.processes  # starts servers / CLI processes on 127.0.0.1

MODEL = "churn"
ROWS_PER_REQUEST = 4
# A wide latency budget: on a 2-core CI machine running four model servers, the gateway and this
# test, a revision stalls for a few hundred ms now and then, and a p99 over ~60 requests is their
# maximum. The latency check itself is covered by tests/unit/test_canary_*.py.
THRESHOLDS = Thresholds(min_requests=40, min_predictions=150, max_p99_ratio=5.0, p99_slack_ms=1000.0)
THRESHOLD_TEXT = "min_requests=40,min_predictions=150,p99_ratio=5,p99_slack=1000"


# -- bundles, serve, traffic ------------------------------------------------------------------------


class Bundles:
    """Churn bundles trained here, each with the same (scipy) drift detector, registered on demand."""

    def __init__(self, root: Path):
        self.root, df = root, churn(3000, seed=0)
        df.iloc[:2400].to_parquet(root / "train.parquet")
        df.iloc[2400:].to_parquet(root / "valid.parquet")
        shuffled = df.iloc[:2400].copy()
        shuffled["churn"] = np.random.default_rng(1).permutation(shuffled["churn"].to_numpy())
        shuffled.to_parquet(root / "shuffled.parquet")
        (root / "schema.json").write_text(json.dumps(infer_schema(df, "churn").to_dict()))
        self.drift = None

    def build(self, name: str, seed: int, shuffled: bool = False) -> Path:
        out = self.root / name
        params = {
            "n_estimators": 40,
            "max_depth": 4,
            "nthread": 1,
            "seed": seed,
            "subsample": 0.8,
            "colsample_bytree": 0.8,
        }
        train = self.root / ("shuffled.parquet" if shuffled else "train.parquet")
        train_model(str(train), str(self.root / "valid.parquet"), str(self.root / "schema.json"), params, str(out))
        if self.drift is None:
            fit_drift_baseline(str(out), str(self.root / "train.parquet"), str(out / "drift"), backend="scipy")
            self.drift = out / "drift"
        else:
            shutil.copytree(self.drift, out / "drift")
        write_manifest(out)
        return out


def request_bodies(n: int = 200) -> list[bytes]:
    rows = churn(n * ROWS_PER_REQUEST, seed=7).drop(columns=["churn"]).to_dict("records")
    return [orjson.dumps({"instances": rows[i : i + ROWS_PER_REQUEST]}) for i in range(0, len(rows), ROWS_PER_REQUEST)]


class Traffic:
    """POSTs prediction requests to the gateway from a thread until stopped; counts answers by
    (status, model version)."""

    def __init__(self, url: str, bodies: list[bytes], concurrency: int = 4):
        self.url, self.bodies, self.concurrency = f"{url}/v1/models/{MODEL}:predict", bodies, concurrency
        self.counts: collections.Counter = collections.Counter()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=lambda: asyncio.run(self._run()), daemon=True)

    def __enter__(self) -> Traffic:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(30)

    async def _run(self) -> None:
        async with aiohttp.ClientSession(headers={"content-type": "application/json"}) as session:
            await asyncio.gather(*(self._worker(session, i) for i in range(self.concurrency)))

    async def _worker(self, session: aiohttp.ClientSession, offset: int) -> None:
        i = offset
        while not self._stop.is_set():
            try:
                async with session.post(self.url, data=self.bodies[i % len(self.bodies)]) as response:
                    await response.read()
                    self.counts[(response.status, response.headers.get("x-kfloop-model-version"))] += 1
            except aiohttp.ClientError:
                self.counts[("error", None)] += 1
            i += self.concurrency

    def by_version(self) -> dict[str, int]:
        out: collections.Counter = collections.Counter()
        for (status, version), n in list(self.counts.items()):
            out[version] += n if status == 200 else 0
        return dict(out)


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """``kfloop serve`` of churn:1 (production); ``registry``, ``bundles``, ``target`` and ``bodies`` with it."""
    root = tmp_path_factory.mktemp("canary")
    home, bundles = root / "home", Bundles(root)
    registry = Registry(LocalStore(home))
    registry.register(MODEL, bundles.build("v1", seed=0))
    serve = ServeProcess(
        home, "--no-trigger", "--transformer-args", "--capture_flush_seconds 0.2 --drift_window 100000", seed=3
    )
    try:
        target = LocalTarget(serve.url, token_file=serve.token_file)
        rollout.deploy(registry, target, f"{MODEL}:1")
        yield type(
            "Served",
            (),
            {
                "serve": serve,
                "url": serve.url,
                "home": home,
                "registry": registry,
                "bundles": bundles,
                "target": target,
                "bodies": request_bodies(),
            },
        )
    finally:
        serve.stop()


def analyse(served, ref: str, strategy: str = "canary", progress=None, **plan) -> dict:
    plan = plan_for(
        strategy, hold_requests=60, poll_seconds=0.25, timeout_seconds=60, data_wait_seconds=3, warmup_seconds=1, **plan
    )
    return run_analysis(
        served.registry,
        served.target,
        LocalStatsSource(served.url, served.registry.store, token_file=served.serve.token_file),
        MODEL,
        ref,
        plan,
        THRESHOLDS,
        served.registry.store,
        progress=progress or (lambda line: None),
    )


def decisions_of(served, version: int) -> list[dict]:
    return [
        e["data"]
        for e in read_events(served.registry.store, MODEL, (ROLLOUT_DECISION,))
        if e["data"]["canary_version"] == version
    ]


def stable_version(served) -> int:
    return served.target.status(MODEL)["stable"]["version"]


# -- local rollouts ---------------------------------------------------------------------------------


def test_a_good_candidate_is_promoted_step_by_step(served):
    stable = stable_version(served)
    good = served.registry.register(MODEL, served.bundles.build("good", seed=11))
    with Traffic(served.url, served.bodies) as traffic:
        result = analyse(served, good.ref, steps=[10, 50])
    assert result["outcome"] == "promoted", result["reason"]
    status = served.target.status(MODEL)
    assert status["stable"]["version"] == good.version and status["canary"] is None
    assert (served.registry.get(MODEL, good.version).stage, served.registry.get(MODEL, stable).stage) == (
        "production",
        "archived",
    )
    decisions = decisions_of(served, good.version)
    assert [(d["step"], d["percent"], d["verdict"]) for d in decisions] == [
        (1, 10, "passed"),
        (2, 50, "passed"),
        (3, 100, "promoted"),
    ]
    first = {c["metric"]: c for c in decisions[0]["metrics"]}
    assert first["prediction_divergence"]["passed"] is True and first["prediction_divergence"]["canary"] < 0.25
    assert first["error_rate"]["canary"] == 0 and first["quality"]["skipped"]
    assert decisions[0]["stats"]["canary"]["requests"] >= 60 and decisions[0]["stats"]["canary"]["predictions"] >= 150
    reasons = [h["reason"] for h in served.registry.get(MODEL, good.version).stage_history]
    assert any("step 1/3 at 10% passed" in r for r in reasons) and "promoted" in reasons[-1]
    assert traffic.counts[("error", None)] == 0 and all(status == 200 for status, _ in traffic.counts)
    assert traffic.by_version().get(str(good.version), 0) > 0


def test_a_bad_candidate_is_rolled_back_and_rejected_with_the_failed_check(served):
    stable = stable_version(served)
    bad = served.registry.register(MODEL, served.bundles.build("shuffled", seed=0, shuffled=True))
    first = rollout.deploy(served.registry, served.target, bad.ref, canary_percent=5)
    pid = first["canary"]["processes"]["predictor"]["pid"]
    seen = []

    def progress(line: str) -> None:  # at the first step: the same canary process, with its new share
        if "at 10%" in line and not seen:
            seen.append(served.target.status(MODEL)["canary"])

    with Traffic(served.url, served.bodies):
        result = analyse(served, bad.ref, progress=progress)
    assert seen[0]["percent"] == 10 and seen[0]["processes"]["predictor"]["pid"] == pid
    assert result["outcome"] == "rolled-back"
    status = served.target.status(MODEL)
    assert status["stable"]["version"] == stable and status["canary"] is None
    (decision,) = decisions_of(served, bad.version)
    assert (decision["step"], decision["percent"], decision["verdict"]) == (1, 10, "rolled-back")
    failed = [c for c in decision["metrics"] if c["passed"] is False and c["metric"] != "requests"]
    assert [c["metric"] for c in failed] == ["prediction_divergence"] and failed[0]["canary"] > 0.25
    assert decision["reason"].startswith("failed: prediction_divergence")  # at once, not at the end of the step
    record = served.registry.get(MODEL, bad.version)
    assert record.stage == "rejected" and "prediction_divergence" in record.stage_history[-1]["reason"]
    assert served.registry.get(MODEL, stable).stage == "production"


def test_blue_green_from_the_cli_bakes_on_shadow_traffic_no_client_sees_then_switches(served):
    stable = stable_version(served)
    green = served.registry.register(MODEL, served.bundles.build("green", seed=12))
    env = {k: v for k, v in os.environ.items() if not k.startswith("KFLOOP_")}
    cmd = [
        sys.executable,
        "-m",
        "kfloop.cli",
        "--home",
        str(served.home),
        "rollout",
        "analyze",
        green.ref,
        "--strategy",
        "blue-green",
        "--gateway",
        served.url,
        "--hold-requests",
        "60",
        "--warmup-seconds",
        "1",
        "--step-timeout",
        "60",
        "--thresholds",
        THRESHOLD_TEXT,
        "--json",
    ]
    during_bake, progress = [], []
    with Traffic(served.url, served.bodies) as traffic:
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
        for line in proc.stderr:  # progress lines; the result is JSON on stdout
            progress.append(line)
            if "at 0%: passed" in line:
                during_bake.append(traffic.by_version().get(str(green.version), 0))
        result = json.loads(proc.stdout.read())
    assert proc.wait(30) == 0, "".join(progress)
    assert result["outcome"] == "promoted" and result["strategy"] == "blue-green"
    assert during_bake == [0]  # while it baked, no client got an answer from the candidate
    bake = decisions_of(served, green.version)[0]
    assert (bake["percent"], bake["verdict"]) == (0, "passed") and bake["stats"]["canary"]["requests"] >= 60
    records = (served.home / "serving" / MODEL / "shadow" / f"v{green.version}.jsonl").read_text().splitlines()
    assert len(records) >= 60 and json.loads(records[0])["primary"]["version"] == stable
    status = served.target.status(MODEL)
    assert status["stable"]["version"] == green.version and status["shadow"] is None
    assert served.registry.get(MODEL, green.version).stage == "production"


RUNNER = r"""
import json, os, sys
from kfloop.store.registry import Registry
from kfloop.store.objects import LocalStore

args = sys.argv[1:]
params = dict(args[i + 1].split("=", 1) for i in range(len(args)) if args[i] == "--param")
record = Registry(LocalStore(os.environ["KFLOOP_HOME"])).register(params["model_name"], os.environ["CANDIDATE"])
print(json.dumps({"registered": record.ref, "gate": {"passed": True}, "run_dir": "x", "log_path": "x", "seconds": 0}))
"""


def test_the_trigger_rolls_out_the_version_its_run_registered(served, tmp_path):
    bundle = served.bundles.build("retrained", seed=13)
    script = tmp_path / "runner.py"
    script.write_text(RUNNER)
    sink = EventSink()
    tmp_path.joinpath("home").symlink_to(served.home)
    try:
        trigger = Trigger(
            tmp_path,
            sink,
            "--consecutive_windows",
            "1",
            "--original_source",
            "sample:churn",
            "--auto_rollout",
            "canary",
            "--gateway_url",
            served.url,
            "--rollout_steps",
            "50",
            "--rollout_hold_requests",
            "60",
            "--rollout_warmup_seconds",
            "1",
            "--rollout_thresholds",
            THRESHOLD_TEXT,
            env={"KFLOOP_TRIGGER_RUNNER_CMD": f"{sys.executable} {script}", "CANDIDATE": str(bundle)},
            fake=False,
        )
        try:
            data = {"data": {"is_drift": 1, "window_index": 0}, "model": MODEL, "model_version": "1"}
            with Traffic(served.url, served.bodies):
                assert trigger.post(make_event(DRIFT_DETECTED, "test", data, subject=MODEL)).json()["action"] == "start"
                finished = wait_for(lambda: sink.of_type(RETRAIN_FINISHED), 30, "retrain.finished")[0]["data"]
                ref = finished["registered"]
                final = wait_for(
                    lambda: [
                        e for e in sink.of_type(ROLLOUT_DECISION) if e["data"]["verdict"] in ("promoted", "rolled-back")
                    ],
                    90,
                    "a final decision",
                )
            assert final[0]["data"]["verdict"] == "promoted", final[0]["data"]
            rollouts = trigger.status(MODEL)["rollouts"]
        finally:
            assert trigger.stop() == 0, trigger.output()
    finally:
        sink.close()
    version = int(ref.split(":")[1])
    assert [(e["data"]["percent"], e["data"]["verdict"]) for e in sink.of_type(ROLLOUT_DECISION)] == [
        (50, "passed"),
        (100, "promoted"),
    ]
    assert [(r["version"], r["status"]) for r in rollouts] == [(version, "promoted")]
    assert served.registry.get(MODEL, version).stage == "production" and stable_version(served) == version


# -- Prometheus -------------------------------------------------------------------------------------


def knative(query: str) -> tuple[int, dict]:
    """Two revisions: churn-predictor-00001 (stable) and -00002 (canary, slower, failing)."""
    canary = 'revision_name="churn-predictor-00002"' in query
    if "revision_app_request_latencies_bucket" in query:
        return vector("40" if canary else "12.5")
    if 'response_code_class="5xx"' in query:
        return vector("9" if canary else "1", "0")  # several series are summed
    if "revision_app_request_count" in query:
        return vector("100.4" if canary else "900")
    return 400, {"status": "error", "errorType": "bad_data", "error": "unexpected query"}


def test_prometheus_source_reads_legacy_knative_revision_metrics_over_the_step(tmp_path):
    prometheus = FakePrometheus(knative)
    now = [1000.0]
    store = LocalStore(tmp_path)
    source = PrometheusSource(prometheus.url, "models", "churn", store, flavor="knative-legacy", clock=lambda: now[0])
    try:
        mark = source.begin(MODEL)
        with CaptureWriter(store, MODEL) as writer:  # predictions come from the captures, by version
            writer.add([capture_record(MODEL, "2", {}, [0.4, 0.6]) for _ in range(3)])
        now[0] += 90.2
        stable, canary = source.collect(MODEL, Side(1, "churn-predictor-00001"), Side(2, "churn-predictor-00002"), mark)
    finally:
        prometheus.close()
    assert (stable.requests, stable.errors, stable.p99_ms) == (900, 1, 12.5)
    assert (canary.requests, canary.errors, canary.p99_ms) == (100, 9, 40.0)
    assert canary.predictions == [[0.4, 0.6]] * 3 and stable.predictions == []
    expected = KNATIVE_LEGACY_QUERIES["requests"].format(
        namespace="models", revision="churn-predictor-00002", window=91
    )
    assert expected in prometheus.queries
    assert (
        expected == 'sum(increase(revision_app_request_count{namespace_name="models",'
        'revision_name="churn-predictor-00002"}[91s]))'
    )
    verdict = compare(stable, canary, Thresholds(min_predictions=1000))
    assert verdict.failed == ["error_rate", "p99_latency_ms"]


def test_prometheus_source_reports_empty_results_errors_and_missing_revisions():
    empty = FakePrometheus(lambda q: vector())
    broken = FakePrometheus(lambda q: (400, {"status": "error", "errorType": "bad_data", "error": "parse error"}))
    try:
        source = PrometheusSource(empty.url, "models")
        stats = source.collect(MODEL, Side(1, "r1"), None, source.begin(MODEL))
        assert stats == (RevisionStats(1, 0, 0, None), RevisionStats())
        with pytest.raises(KfloopError, match="refused .* parse error"):
            PrometheusSource(broken.url, "models").query("up")
        with pytest.raises(ConfigError, match="no Knative revision name"):
            source.collect(MODEL, Side(1), None, source.begin(MODEL))
        with pytest.raises(KfloopError, match="did not answer"):
            PrometheusSource(f"http://127.0.0.1:{free_port()}", "models").query("up")
        with pytest.raises(ConfigError, match="flavor"):
            PrometheusSource(empty.url, "models", flavor="datadog")
    finally:
        empty.close()
        broken.close()


# -- security: loopback only, the control plane, bounded request ids -------------------------------


def listening_addresses(pid: int) -> list[tuple[str, int]]:
    procs = [psutil.Process(pid), *psutil.Process(pid).children(recursive=True)]
    found = []
    for proc in procs:
        try:
            connections = getattr(proc, "net_connections", None) or proc.connections  # psutil < 6: connections
            found += [c.laddr for c in connections(kind="inet") if c.status == psutil.CONN_LISTEN]
        except psutil.NoSuchProcess:
            pass
    return found


def captured(home: Path, request_id: str, timeout: float = 20.0) -> dict:
    def find():
        return next((r for r in read_captures(LocalStore(home), MODEL) if r["request_id"] == request_id), None)

    return wait_for(find, timeout, f"the capture of {request_id}")


def test_kfloop_serve_listens_on_loopback_only_and_guards_its_control_plane(served):
    addresses = listening_addresses(served.serve.proc.pid)
    assert len(addresses) >= 3 and {ip for ip, _ in addresses} == {"127.0.0.1"}, (
        addresses
    )  # gateway, predictor, transformer
    token_file = served.serve.token_file
    assert stat.S_IMODE(os.stat(token_file).st_mode) == 0o600
    admin, auth = f"{served.url}/kfloop/v1/models/{MODEL}", served.serve.auth
    assert httpx.get(admin).status_code == 401
    assert httpx.get(admin, headers={"authorization": "Bearer " + "x" * 43}).status_code == 401
    assert httpx.get(admin, headers={**auth, "origin": "http://attacker.example"}).status_code == 403
    before = httpx.get(admin, headers=auth).json()
    # what a page in a browser can send: a text/plain POST from a foreign origin, with or without a token
    csrf = {"content-type": "text/plain", "origin": "http://attacker.example"}
    deploy = f"{admin}/deploy"
    body = json.dumps({"version": before["stable"]["version"], "canary_percent": 50})
    assert httpx.post(deploy, content=body, headers=csrf).status_code == 403
    assert httpx.post(deploy, content=body, headers={"content-type": "text/plain"}).status_code == 401
    refused = httpx.post(deploy, content=body, headers={**auth, "content-type": "text/plain"})
    assert refused.status_code == 415 and "error" in refused.json()
    events = httpx.post(f"{served.url}/kfloop/v1/events", json={"specversion": "1.0"})
    assert events.status_code == 401
    assert httpx.post(f"{admin}/rollback").status_code == 401
    assert httpx.get(admin, headers=auth).json()["canary"] == before["canary"]
    hostile = httpx.post(f"{served.url}/kfloop/v1/models/%2E%2E/deploy", json={"version": 1}, headers=auth)
    assert hostile.status_code == 400 and "model name '..' is not valid" in hostile.json()["error"]
    assert not (served.home / "state.json").exists()
    # inference stays open, as KServe's is
    assert httpx.post(f"{served.url}/v1/models/{MODEL}:predict", content=served.bodies[0]).status_code == 200
    # a client's x-kfloop-revision reaching a transformer directly is not trusted (the gateway signs its own)
    stable = httpx.get(admin, headers=auth).json()["stable"]
    spoofed = httpx.post(
        stable["url"] + f"/v1/models/{MODEL}:predict",
        content=served.bodies[1],
        headers={"content-type": "application/json", "x-kfloop-revision": "shadow", "x-request-id": "spoof-1"},
        trust_env=False,
    )
    assert spoofed.status_code == 200
    via_gateway = httpx.post(
        f"{served.url}/v1/models/{MODEL}:predict",
        content=served.bodies[1],
        headers={"content-type": "application/json", "x-kfloop-revision": "canary", "x-request-id": "gateway-1"},
    )
    assert via_gateway.status_code == 200 and via_gateway.headers["x-kfloop-revision"] == "stable"
    # the transformer keeps its own role (stable, or canary for a revision that started as one) ...
    assert captured(served.home, "spoof-1:0")["revision"] in ("stable", "canary")
    # ... and takes the gateway's signed one
    assert captured(served.home, "gateway-1:0")["revision"] == "stable"


def test_an_8kb_request_id_is_a_400_and_never_takes_a_revision_down(served):
    stable = stable_version(served)
    candidate = served.registry.register(MODEL, served.bundles.build("long-ids", seed=21))
    rollout.deploy(served.registry, served.target, candidate.ref, canary_percent=50)
    long_id = "i" * 8200
    v2 = {"id": long_id, "inputs": [{"name": "age", "datatype": "FP32", "shape": [1], "data": [40]}]}
    predict = f"{served.url}/v1/models/{MODEL}:predict"
    try:
        with Traffic(served.url, served.bodies) as traffic:
            for _ in range(40):
                by_header = httpx.post(
                    predict,
                    content=served.bodies[0],
                    headers={"content-type": "application/json", "x-request-id": long_id},
                )
                assert by_header.status_code == 400 and "the limit is 256 bytes" in by_header.json()["error"]
                by_body = httpx.post(f"{served.url}/v2/models/{MODEL}/infer", json=v2)
                assert by_body.status_code == 400 and "256 bytes" in by_body.json()["error"], by_body.text
            time.sleep(0.5)
        status = served.target.status(MODEL)
        assert status["stable"]["healthy"] and status["canary"]["healthy"], status
        assert traffic.counts and all(code == 200 for code, _ in traffic.counts), traffic.counts
        assert set(traffic.by_version()) == {str(stable), str(candidate.version)}
        for pinned in ("/prev", "/latest"):  # each revision itself refuses the id with a 400 too
            answer = httpx.post(
                f"{status['stable' if pinned == '/prev' else 'canary']['url']}/v1/models/{MODEL}:predict",
                content=served.bodies[0],
                headers={"content-type": "application/json", "x-request-id": long_id},
                trust_env=False,
            )
            assert answer.status_code == 400 and "256 bytes" in answer.json()["error"]
        pinned = httpx.post(
            f"{served.url}/latest/v1/models/{MODEL}:predict",
            content=served.bodies[2],
            headers={"content-type": "application/json", "x-request-id": "pinned-canary-1"},
        )
        assert pinned.status_code == 200 and pinned.headers["x-kfloop-revision"] == "canary"
        assert captured(served.home, "pinned-canary-1:0")["revision"] == "canary"  # the gateway's signed role
    finally:
        rollout.rollback(served.registry, served.target, MODEL, reason="test of long request ids")
