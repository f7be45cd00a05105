"""The drift transformer as real processes on 127.0.0.1: a predictor, transformers in front of it,
and a CloudEvents sink in the test that can be switched down and up.

- ``local``: captures to a LocalStore, forwards V1 to the predictor, Alibi backend, drift window
  of WINDOW rows, at most 200 rows per request (the predictor: 50 rows, 64 KiB bodies).
- ``s3``: the bundle from the registry on the moto S3 server (``churn:1``), captures (Parquet) to
  it, forwards V2, scipy backend.
- ``no_store``: captures to an S3 endpoint where nothing listens, with a 3-record buffer.
"""

from __future__ import annotations

import functools
import json
import re
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import numpy as np
import pytest
from prometheus_client.parser import text_string_to_metric_families

from kfloop.config import Settings
from kfloop.events.cloudevents import parse_event
from kfloop.monitoring.capture import read_captures
from kfloop.monitoring.window_log import read_windows
from kfloop.store.objects import LocalStore, open_store
from kfloop.store.registry import Registry
from kfloop.training.samples import churn
from tests.conftest import free_port, wait_for
from tests.fakes.bundles import trained_bundle
from tests.serving.conftest import ServerProcess

pytestmark = pytest.mark.processes  # starts servers / CLI processes on 127.0.0.1

MODEL = "churn"
WINDOW = 250
CHUNK = 50  # rows per request: the predictor's limit
TRANSFORMER_MAX_BATCH = 200
PREDICTOR_MAX_BODY = 64 * 1024
NO_STORE_BUFFER = 3
CATEGORICAL = ("contract", "payment_method", "internet_service")


# -- fixtures: bundle, sink, processes ------------------------------------------------------------


@pytest.fixture(scope="module")
def bundle(tmp_path_factory) -> Path:
    """A churn bundle (3000 rows of ``sample:churn``) with an Alibi drift detector (served as version 3)."""
    params = {"n_estimators": 40, "max_depth": 4, "nthread": 1}
    return trained_bundle(tmp_path_factory.mktemp("transformer"), churn(3000, seed=0), 2400, params, "alibi")


class Sink:
    """A CloudEvents sink on 127.0.0.1 that records what it receives; ``down()`` closes the port."""

    def __init__(self):
        self.port, self.events, self._lock, self._server = free_port(), [], threading.Lock(), None
        self.url = f"http://127.0.0.1:{self.port}/"
        self.up()

    def up(self) -> None:
        sink = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("content-length", 0)))
                with sink._lock:
                    sink.events.append(parse_event(dict(self.headers), body))
                self.send_response(202)
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, *args):
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def down(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def received(self, source: str) -> list[dict]:
        with self._lock:
            return [e for e in self.events if e["source"] == source]


@pytest.fixture(scope="module")
def sink():
    s = Sink()
    yield s
    s.down()


class Server(ServerProcess):
    """A kfloop KServe server (``module``) for MODEL; ``metric`` reads its /metrics."""

    def __init__(self, module: str, *args: str, env: dict | None = None):
        port = free_port()
        super().__init__(
            module,
            ["--model_name", MODEL, "--http_port", str(port), "--enable_grpc", "false", *args],
            port,
            f"/v2/models/{MODEL}/ready",
            env,
        )

    def metrics(self) -> dict[str, float]:
        """``name{label="v",...}`` -> value, for the samples of ``/metrics``."""
        text = httpx.get(f"{self.url}/metrics", timeout=5).text
        return {
            _key(s.name, s.labels): s.value for family in text_string_to_metric_families(text) for s in family.samples
        }

    def metric(self, name: str, **labels: str) -> float:
        return self.metrics().get(_key(name, {"model_name": MODEL, **labels}), 0.0)


def _key(name: str, labels: dict) -> str:
    return name + "{" + ",".join(f'{k}="{v}"' for k, v in sorted(labels.items())) + "}"


# flags of the transformers the tests watch closely: captures written within 0.2 s, delivery retried
# at least every 0.5 s, every row checked for drift (no rest between checks)
FAST = (
    "--max_batch_size",
    str(TRANSFORMER_MAX_BATCH),
    "--capture_flush_seconds",
    "0.2",
    "--outbox_backoff_max",
    "0.5",
    "--shutdown_seconds",
    "3",
    "--drift_cpu_share",
    "1",
)


@pytest.fixture(scope="module")
def s3_module_settings(s3_server, tmp_path_factory) -> Settings:
    return Settings(
        home=tmp_path_factory.mktemp("s3home"),
        s3_endpoint=s3_server,
        s3_access_key="test-access",
        s3_secret_key="test-secret",
        s3_bucket=f"kfloop-{uuid.uuid4().hex[:12]}",
    )


@pytest.fixture(scope="module")
def servers(bundle, sink, s3_module_settings, tmp_path_factory):
    """The predictor and four transformers, started together; always stopped (together)."""
    predictor = Server(
        "kfloop.serving.model_servers.predictor",
        "--model_dir",
        str(bundle),
        "--model_version",
        "3",
        "--max_batch_size",
        str(CHUNK),
        "--max_body_bytes",
        str(PREDICTOR_MAX_BODY),
    )
    started = {"predictor": predictor}
    try:
        transformer = functools.partial(
            Server,
            "kfloop.serving.model_servers.transformer",
            "--model_dir",
            str(bundle),
            "--model_version",
            "3",
            "--predictor_host",
            f"127.0.0.1:{predictor.port}",
        )
        homes = {name: tmp_path_factory.mktemp(name) for name in ("local", "dead", "shutdown", "kserve_path")}
        started["local"] = transformer(
            *FAST, "--drift_window", str(WINDOW), "--sink_url", sink.url, env={"KFLOOP_HOME": str(homes["local"])}
        )
        started["kserve_path"] = transformer(
            *FAST,
            "--drift_window",
            str(WINDOW),
            "--request_logging",
            "true",
            env={"KFLOOP_HOME": str(homes["kserve_path"])},
        )
        # the transformer starts on churn:1 while the predictor answers as version 3 (the same files
        # registered again): it loads version 3's reference from the registry when 3 first answers
        registry = Registry(open_store(s3_module_settings))
        record, _, _ = (registry.register(MODEL, bundle) for _ in range(3))
        started["s3"] = Server(
            "kfloop.serving.model_servers.transformer",
            "--model_dir",
            record.ref,
            "--predictor_host",
            f"127.0.0.1:{predictor.port}",
            *FAST,
            "--drift_window",
            str(WINDOW),
            "--predictor_protocol",
            "v2",
            "--drift_backend",
            "scipy",
            "--capture_format",
            "parquet",
            "--event_source",
            "kfloop/churn-s3",
            env={**s3_module_settings.storage_env(), "K_SINK": sink.url},
        )
        dead_s3 = Settings(
            home=homes["dead"], s3_endpoint=f"127.0.0.1:{free_port()}", s3_access_key="a", s3_secret_key="b"
        )
        started["no_store"] = transformer(
            "--drift_backend",
            "scipy",
            "--capture_flush_seconds",
            "0.1",
            "--capture_max_buffer",
            str(NO_STORE_BUFFER),
            "--shutdown_seconds",
            "1",
            env=dead_s3.storage_env(),
        )
        started["shutdown"] = transformer(
            "--drift_backend",
            "scipy",
            "--capture_flush_seconds",
            "300",
            "--capture_batch_size",
            "10000",
            env={"KFLOOP_HOME": str(homes["shutdown"])},
        )
        for server in started.values():
            server.wait_ready()
        for name in ("local", "shutdown", "kserve_path"):
            started[name].home = homes[name]
        yield started
    finally:
        stop_all(started.values())


def stop_all(servers) -> None:
    """SIGTERM every process group first, then wait for each (graceful shutdowns overlap)."""
    for server in servers:
        server.terminate()
    for server in servers:
        server.stop()


@pytest.fixture(scope="module")
def predictor(servers):
    return servers["predictor"]


@pytest.fixture(scope="module")
def local(servers):
    return servers["local"]


@pytest.fixture(scope="module")
def s3(servers):
    return servers["s3"]


# -- helpers ---------------------------------------------------------------------------------------


def instances(df) -> list[dict]:
    """V1 instances keyed by feature name (the target dropped), as JSON values."""
    return json.loads(df.drop(columns=["churn"]).to_json(orient="records"))


def v2_inputs(rows: list[dict]) -> dict:
    names = list(rows[0])
    return {
        "inputs": [
            {
                "name": n,
                "shape": [len(rows)],
                "datatype": "BYTES" if n in CATEGORICAL else "FP64",
                "data": [r[n] for r in rows],
            }
            for n in names
        ]
    }


def post_v1(server: Server, body, request_id: str | None = None) -> httpx.Response:
    headers = {"x-request-id": request_id} if request_id else {}
    if body == "form":  # curl -d without a content-type
        body, headers["content-type"] = b'{"instances": []}', "application/x-www-form-urlencoded"
    kwargs = {"content": body} if isinstance(body, bytes) else {"json": body}
    return httpx.post(f"{server.url}/v1/models/{MODEL}:predict", headers=headers, timeout=30, **kwargs)


def post_v2(server: Server, body: dict, request_id: str | None = None) -> httpx.Response:
    headers = {"x-request-id": request_id} if request_id else {}
    return httpx.post(f"{server.url}/v2/models/{MODEL}/infer", json=body, headers=headers, timeout=30)


def v2_rows(answer: dict) -> list:
    [out] = answer["outputs"]
    return np.asarray(out["data"]).reshape(out["shape"]).tolist()


def send_rows(server: Server, rows: list[dict]) -> None:
    for start in range(0, len(rows), CHUNK):
        response = post_v1(server, {"instances": rows[start : start + CHUNK]})
        assert response.status_code == 200, response.text


def settle(server: Server, timeout: float = 20.0) -> None:
    """Wait until the drift thread has checked every row it was given."""
    deadline = time.monotonic() + timeout
    while server.metric("kfloop_drift_rows_checked_total") != server.metric("kfloop_drift_rows_submitted_total"):
        assert time.monotonic() < deadline, "drift thread did not catch up"
        time.sleep(0.05)


def start_new_window(server: Server, seed: int) -> float:
    """Fill the current drift window with clean rows, so the next row starts a window; returns
    the number of windows checked so far."""
    settle(server)
    pending = int(server.metric("kfloop_drift_window_rows"))
    if pending:
        send_rows(server, instances(churn(WINDOW - pending, seed=seed)))
        settle(server)
    assert server.metric("kfloop_drift_window_rows") == 0
    return server.metric("kfloop_drift_windows_checked_total")


def captures_with(store, prefix: str, n: int, timeout: float = 20.0) -> list[dict]:
    """The capture records whose request id starts with ``prefix``, once there are ``n`` of them."""
    deadline = time.monotonic() + timeout
    while True:
        records = [r for r in read_captures(store, MODEL) if r["request_id"].startswith(prefix)]
        if len(records) >= n or time.monotonic() > deadline:
            return sorted(records, key=lambda r: r["request_id"])
        time.sleep(0.1)


@pytest.fixture(scope="module")
def rows() -> list[dict]:
    """Twelve served rows: clean ones, a missing number, a missing and an unseen category."""
    rows = instances(churn(12, seed=3))
    rows[1]["monthly_charges"] = None
    rows[2]["contract"] = None
    rows[3]["payment_method"] = "cheque"
    return rows


# -- forwarding --------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["local", "s3"])
def test_v1_and_v2_through_the_transformer_match_the_predictor(servers, rows, name):
    direct = post_v1(servers["predictor"], {"instances": rows})
    assert direct.status_code == 200, direct.text
    expected = direct.json()["predictions"]
    transformer = servers[name]
    as_lists = [[r[k] for k in rows[0]] for r in rows]
    v1 = post_v1(transformer, {"instances": rows}, request_id=f"eq-v1-{name}")
    v1_lists = post_v1(transformer, {"instances": as_lists})
    v2 = post_v2(transformer, v2_inputs(rows), request_id=f"eq-v2-{name}")
    for response in (v1, v1_lists, v2):
        assert response.status_code == 200, response.text
    assert v1.json()["predictions"] == expected
    assert v1_lists.json()["predictions"] == expected
    assert v2_rows(v2.json()) == expected
    assert v2.json()["model_version"] == "3"
    assert v2.json()["id"] == v2.headers["x-request-id"] == f"eq-v2-{name}"  # the predictor got it too (s3)
    assert v1.headers["x-request-id"] == f"eq-v1-{name}"
    assert len(v1_lists.headers["x-request-id"]) == 32  # generated


def test_concurrent_v1_requests_are_combined_for_the_predictor_and_each_gets_its_own_rows(servers, predictor):
    """48 concurrent V1 requests of 1-20 rows, as objects or lists, some traced: the transformer makes fewer
    predictor calls than requests, every answer is the predictor's own for those rows, under the request's
    own id; combined calls over the predictor's 50-row limit are refused with 400 there and sent again one by
    one, and nothing is lost on the way."""
    import asyncio

    local = servers["local"]
    frame = churn(400, seed=21)
    table = instances(frame)
    requests = []
    start = 0
    for i in range(48):
        n = 1 + (i * 7) % 20
        rows = table[start : start + n]
        start = (start + n) % (len(table) - 20)
        body = {"instances": rows if i % 3 else [[r[k] for k in rows[0]] for r in rows]}
        headers = {"x-request-id": f"combined-{i}"}
        if i % 8 == 0:
            headers["traceparent"] = f"00-{uuid.uuid4().hex}-{uuid.uuid4().hex[:16]}-01"  # always sent alone
        requests.append((body, headers))
    expected = [post_v1(predictor, {"instances": body["instances"]}).json()["predictions"] for body, _ in requests]
    calls_before = local.metric("kfloop_transformer_predictor_calls_total", model_name=MODEL)
    answered_before = local.metric("kfloop_transformer_coalesced_requests_total", model_name=MODEL)

    async def send_all():
        async with httpx.AsyncClient(timeout=30) as client:
            url = f"{local.url}/v1/models/{MODEL}:predict"
            return await asyncio.gather(*(client.post(url, json=b, headers=h) for b, h in requests))

    responses = asyncio.run(send_all())
    for (_, headers), response, want in zip(requests, responses, expected):
        assert response.status_code == 200, response.text
        assert response.json()["predictions"] == want
        assert response.headers["x-request-id"] == headers["x-request-id"]
    calls = local.metric("kfloop_transformer_predictor_calls_total", model_name=MODEL) - calls_before
    answered = local.metric("kfloop_transformer_coalesced_requests_total", model_name=MODEL) - answered_before
    assert answered == len(requests) and calls < len(requests)


@pytest.mark.parametrize("protocol", ["v1", "v2"])
def test_the_fast_path_serves_and_captures_as_kserve_path_does(servers, rows, protocol):
    """``local`` answers on the fast path, ``kserve_path`` (request logging on) on KServe's own: the
    same answers, headers and capture records, good requests and bad."""
    fast, kserve = servers["local"], servers["kserve_path"]
    post = post_v1 if protocol == "v1" else post_v2
    good = {"instances": rows} if protocol == "v1" else v2_inputs(rows)
    answers = [post(server, good, request_id=f"same-{protocol}") for server in (fast, kserve)]
    assert [a.status_code for a in answers] == [200, 200], answers[1].text
    assert [a.headers["x-request-id"] for a in answers] == [f"same-{protocol}"] * 2
    assert answers[0].json() == answers[1].json()
    fast_records, kserve_records = (
        [
            {**r, "time": None, "capture_id": None}
            for r in captures_with(LocalStore(s.home), f"same-{protocol}:", len(rows))
        ]
        for s in (fast, kserve)
    )
    assert len(fast_records) == len(rows) and fast_records == kserve_records
    bad = (
        [{"instances": [[40, 5]]}, {"instances": []}]
        if protocol == "v1"
        else [
            {"inputs": v2_inputs(rows)["inputs"][:3]},
            {
                "inputs": [
                    {**i, "datatype": "FP32"} if i["name"] == "contract" else i for i in v2_inputs(rows)["inputs"]
                ]
            },
        ]
    )
    for body in bad:
        answers = [post(server, body) for server in (fast, kserve)]
        assert [a.status_code for a in answers] == [400, 400]
        assert answers[0].json() == answers[1].json()


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--predictor_host", "127.0.0.1:1", "--drift_cpu_share", "0"], "drift cpu_share must be in (0, 1]"),
        (["--predictor_host", "127.0.0.1:1", "--workers", "2"], "--workers 2: the transformer runs one process"),
        ([], "--predictor_host is required"),
    ],
)
def test_bad_flags_stop_the_transformer_with_a_message(bundle, tmp_path, monkeypatch, flags, message):
    from kfloop.serving.model_servers import transformer

    monkeypatch.setenv("KFLOOP_HOME", str(tmp_path))
    argv = ["--model_name", MODEL, "--model_dir", str(bundle), "--configure_logging", "false", *flags]
    with pytest.raises(SystemExit, match=re.escape(f"error: {message}")):
        transformer.main(argv)


def test_a_v2_id_that_cannot_be_a_header_is_400(local, rows):
    response = post_v2(local, {"id": "a\r\nx-injected: 1", **v2_inputs(rows[:1])})
    assert response.status_code == 400
    assert "is not printable ASCII" in response.json()["error"]


def test_a_body_not_sent_as_json_is_400_whichever_protocol_the_predictor_speaks(local, s3):
    for server in (local, s3):
        response = post_v1(server, "form")
        assert response.status_code == 400, response.text
        assert "content-type: application/json" in response.json()["error"]


def test_request_ids_generated_or_from_a_cloudevent_are_returned_and_captured(local):
    row = instances(churn(1, seed=9))
    response = post_v1(local, {"instances": row})
    generated = response.headers["x-request-id"]
    ce_headers = {
        "ce-specversion": "1.0",
        "ce-id": "ce-42",
        "ce-source": "test",
        "ce-type": "predict",
        "content-type": "application/json",
    }
    as_event = httpx.post(f"{local.url}/v1/models/{MODEL}:predict", json={"instances": row}, headers=ce_headers)
    assert as_event.status_code == 200, as_event.text
    assert as_event.json()["predictions"] == response.json()["predictions"]
    store = LocalStore(local.home)
    assert [r["request_id"] for r in captures_with(store, generated, 1)] == [f"{generated}:0"]
    assert [r["request_id"] for r in captures_with(store, "ce-42", 1)] == ["ce-42:0"]


BAD_REQUESTS = [
    ("malformed JSON", b'{"instances": [', "Unrecognized request format"),
    ("not sent as JSON", "form", "content-type: application/json"),
    ("no instances", {"rows": [[1]]}, '"instances"'),
    ("wrong number of features", {"instances": [[40, 5, 70.5]]}, "instance 0 has 3 values; expected 8"),
    ("unknown feature", "extra", "unknown feature names ['colour']"),
    ("missing feature", "missing", "missing features ['age']"),
    ("string for a number", "string", "feature 'age' at row 0: expected a number or null; got 'forty'"),
    ("empty instances", {"instances": []}, '"instances" is empty'),
    ("oversized batch", "oversized", f"over the limit of {TRANSFORMER_MAX_BATCH} rows"),
]


def bad_body(kind, rows):
    row = dict(rows[0])
    if kind == "extra":
        return {"instances": [{**row, "colour": "red"}]}
    if kind == "missing":
        return {"instances": [{k: v for k, v in row.items() if k != "age"}]}
    if kind == "string":
        return {"instances": [{**row, "age": "forty"}]}
    if kind == "oversized":
        return {"instances": [row] * (TRANSFORMER_MAX_BATCH + 1)}
    return kind


def test_bad_requests_get_400_naming_the_field_and_never_reach_the_predictor(local, predictor, rows):
    predicted = predictor.metric("request_predict_seconds_count")
    errors = local.metric("kfloop_transformer_errors_total", code="400")
    for i, (what, body, message) in enumerate(BAD_REQUESTS):
        response = post_v1(local, bad_body(body, rows), request_id=f"bad-{i}")
        assert response.status_code == 400, what
        assert message in response.json()["error"], what
    v2 = post_v2(
        local,
        {
            "inputs": [
                {**i, "datatype": "FP32"} if i["name"] == "contract" else i for i in v2_inputs(rows[:1])["inputs"]
            ]
        },
        request_id="bad-v2",
    )
    assert v2.status_code == 400
    assert "input 'contract' has datatype FP32; expected BYTES" in v2.json()["error"]
    assert predictor.metric("request_predict_seconds_count") == predicted
    assert local.metric("kfloop_transformer_errors_total", code="400") == errors + len(BAD_REQUESTS) + 1

    assert post_v1(local, {"instances": rows[:1]}, request_id="after-bad").status_code == 200
    store = LocalStore(local.home)
    assert captures_with(store, "after-bad", 1)
    assert not [r for r in read_captures(store, MODEL) if r["request_id"].startswith("bad-")]


def test_predictor_4xx_reaches_the_client_with_its_status_and_message(local, rows):
    before = local.metric("kfloop_transformer_predictor_errors_total", code="400")
    over_predictor_limit = {"instances": [rows[0]] * (CHUNK + 10)}
    response = post_v1(local, over_predictor_limit, request_id="bad-predictor-400")
    assert response.status_code == 400
    assert f"has {CHUNK + 10} rows, over the limit of {CHUNK} rows" in response.json()["error"]

    big = {"instances": [{**rows[0], "payment_method": "x" * 1000}] * 100}  # unseen: fine for the transformer
    response = post_v1(local, big, request_id="bad-predictor-413")
    assert response.status_code == 413
    assert f"over the limit of {PREDICTOR_MAX_BODY} bytes" in response.json()["error"]
    assert local.metric("kfloop_transformer_predictor_errors_total", code="400") == before + 1
    assert local.metric("kfloop_transformer_predictor_errors_total", code="413") >= 1


# -- captures --------------------------------------------------------------------------------------


def test_captures_land_in_the_local_store(local, rows, predictor):
    expected = post_v1(predictor, {"instances": rows}).json()["predictions"]
    assert post_v1(local, {"instances": rows}, request_id="cap-local").status_code == 200
    records = captures_with(LocalStore(local.home), "cap-local:", len(rows))
    assert [r["request_id"] for r in records] == sorted(f"cap-local:{i}" for i in range(len(rows)))
    by_row = {int(r["request_id"].split(":")[1]): r for r in records}
    for i, row in enumerate(rows):
        record = by_row[i]
        assert record["features"] == row
        assert record["prediction"] == expected[i]
        assert (record["model"], record["model_version"], record["revision"]) == (MODEL, "3", "stable")
    assert by_row[3]["unseen"] == {"payment_method": "cheque"}
    assert by_row[2]["unseen"] == {} and by_row[0]["unseen"] == {}

    # a role the gateway did not sign (this transformer has no control token) is ignored: the gateway's
    # signed roles are checked through kfloop serve (tests/serving/local/test_live_canary_analysis.py)
    for request_id, signature in (("cap-canary", None), ("cap-forged", "0" * 64)):
        spoofed = {"x-request-id": request_id, "x-kfloop-revision": "canary"}
        if signature:
            spoofed["x-kfloop-revision-signature"] = signature
        answer = httpx.post(f"{local.url}/v1/models/{MODEL}:predict", json={"instances": rows[:1]}, headers=spoofed)
        assert answer.status_code == 200
        assert [r["revision"] for r in captures_with(LocalStore(local.home), f"{request_id}:", 1)] == ["stable"]


def test_the_s3_transformer_fetched_its_bundle_from_the_registry(s3_module_settings, servers):
    fetched = Path(s3_module_settings.home) / "serving" / "bundles" / MODEL / "1"
    assert (fetched / "MANIFEST.json").is_file() and (fetched / "drift").is_dir()


def test_captures_land_in_s3_as_parquet(s3, s3_module_settings, rows):
    assert post_v2(s3, v2_inputs(rows), request_id="cap-s3").status_code == 200
    store = open_store(s3_module_settings)
    records = captures_with(store, "cap-s3:", len(rows))
    assert len(records) == len(rows)
    assert all(key.endswith(".parquet") for key in store.list("captures/"))
    assert {r["request_id"]: r["features"] for r in records}["cap-s3:3"] == rows[3]
    assert {r["request_id"]: r["unseen"] for r in records}["cap-s3:3"] == {"payment_method": "cheque"}


def test_an_unreachable_store_neither_fails_nor_slows_requests(servers, rows):
    no_store = servers["no_store"]
    for _i in range(10):
        started = time.monotonic()
        response = post_v1(no_store, {"instances": rows[:2]})
        assert response.status_code == 200, response.text
        assert time.monotonic() - started < 2.0
    # at most one buffer's worth is being retried and one buffer's worth waits; the rest is dropped
    wait_for(
        lambda: no_store.metric("kfloop_capture_records_dropped_total") >= 20 - 2 * NO_STORE_BUFFER,
        what="capture records dropped",
    )
    assert no_store.metric("kfloop_capture_records_written_total") == 0


# -- drift -------------------------------------------------------------------------------------------


def test_clean_window_emits_nothing_and_drifted_window_emits_a_cloudevent(local, sink):
    checked = start_new_window(local, seed=40)
    before = len(sink.received(f"kfloop/{MODEL}"))
    detected = local.metric("kfloop_drift_detected_total")
    send_rows(local, instances(churn(WINDOW, seed=41)))
    settle(local)
    assert local.metric("kfloop_drift_windows_checked_total") == checked + 1
    assert local.metric("kfloop_drift_detected_total") == detected
    assert local.metric("kfloop_drift_p_value", feature="age") > 0.01

    send_rows(local, instances(churn(WINDOW, seed=42, age_shift=15)))
    wait_for(lambda: len(sink.received(f"kfloop/{MODEL}")) == before + 1, what="drift event")
    event = sink.received(f"kfloop/{MODEL}")[-1]
    assert (event["type"], event["subject"]) == ("io.kfloop.drift.detected", MODEL)
    data = event["data"]
    assert data["meta"]["backend"] == "alibi" and data["meta"]["name"] == "TabularDrift"
    assert data["data"]["is_drift"] == 1
    assert data["data"]["window_index"] == checked + 1 and data["data"]["window_size"] == WINDOW
    assert data["data"]["p_val_by_feature"]["age"] < data["data"]["threshold"]
    assert set(data["data"]) >= {"p_val", "threshold", "distance"}
    assert (data["model"], data["model_version"], data["revision"]) == (MODEL, "3", "stable")
    assert data["capture_location"] == (local.home / "captures" / MODEL / "3").as_uri() + "/"
    assert local.metric("kfloop_drift_detected_total") == detected + 1
    assert local.metric("kfloop_drift_p_value", feature="age") < 1e-6

    def summaries():  # every checked window, clean or drifted, also leaves a summary in the store
        found = {w["window_index"]: w for w in read_windows(LocalStore(local.home), MODEL, "3")}
        return found if {checked, checked + 1} <= set(found) else None

    found = wait_for(summaries, what="the two windows' summaries")
    assert (found[checked]["is_drift"], found[checked + 1]["is_drift"]) == (False, True)
    assert {(w["revision"], w["rows"]) for w in (found[checked], found[checked + 1])} == {("stable", WINDOW)}
    assert "age" in found[checked + 1]["signals"][0]["evidence"]["features"]


def test_scipy_backend_on_s3_transformer_reports_drift(s3, sink, s3_module_settings):
    start_new_window(s3, seed=50)
    send_rows(s3, instances(churn(WINDOW, seed=51, age_shift=15)))
    wait_for(lambda: sink.received("kfloop/churn-s3"), what="drift event from the s3 transformer")
    data = sink.received("kfloop/churn-s3")[-1]["data"]
    assert data["meta"]["backend"] == "scipy"
    assert data["model_version"] == "3"  # the version that answered, checked against its own reference
    assert data["capture_location"].startswith("s3://kfloop-") and data["capture_location"].endswith(
        "/captures/churn/3/"
    )
    assert (Path(s3_module_settings.home) / "serving" / "bundles" / MODEL / "3" / "drift").is_dir()


def test_outbox_keeps_events_while_the_sink_is_down_and_delivers_them_after(local, sink):
    source = f"kfloop/{MODEL}"
    wait_for(lambda: local.metric("kfloop_outbox_depth") == 0, what="earlier events delivered")
    start_new_window(local, seed=60)
    before = len(sink.received(source))
    sink.down()
    try:
        send_rows(local, instances(churn(2 * WINDOW, seed=61, age_shift=15)))
        wait_for(lambda: local.metric("kfloop_outbox_depth") == 2, what="two events in the outbox")
        time.sleep(1.0)  # a few delivery attempts fail meanwhile
        assert len(sink.received(source)) == before
        assert local.metric("kfloop_outbox_depth") == 2
    finally:
        sink.up()
    wait_for(lambda: len(sink.received(source)) == before + 2, what="delivery after the sink came back")
    delivered = sink.received(source)[-2:]
    assert [e["data"]["data"]["window_index"] for e in delivered] == sorted(
        e["data"]["data"]["window_index"] for e in delivered
    )
    wait_for(lambda: local.metric("kfloop_outbox_depth") == 0, what="empty outbox")


# -- metrics and shutdown ------------------------------------------------------------------------------


def test_metrics_show_the_kfloop_counters(local):
    start_new_window(local, seed=70)
    send_rows(local, instances(churn(WINDOW, seed=71)))
    settle(local)
    metrics = local.metrics()
    assert metrics[_key("kfloop_transformer_requests_total", {"model_name": MODEL, "code": "200"})] >= 1
    for name in (
        "kfloop_drift_windows_checked_total",
        "kfloop_drift_detected_total",
        "kfloop_drift_rows_dropped_total",
        "kfloop_capture_records_written_total",
        "kfloop_capture_records_dropped_total",
        "kfloop_outbox_depth",
    ):
        assert _key(name, {"model_name": MODEL}) in metrics, name
    p_values = {k for k in metrics if k.startswith("kfloop_drift_p_value{")}
    assert len(p_values) == 8
    assert any(k.startswith("request_predict_seconds") for k in metrics)  # KServe's own are still there
    assert "kfloop_predictor_" not in httpx.get(f"{local.url}/metrics").text  # the predictor's stay there


def test_shutdown_writes_buffered_captures(servers, rows):
    server = servers["shutdown"]  # captures wait up to 300 s in memory
    for i in range(3):
        assert post_v1(server, {"instances": rows[:2]}, request_id=f"shut-{i}").status_code == 200
    store = LocalStore(server.home)
    time.sleep(0.5)
    assert read_captures(store, MODEL) == []
    assert server.stop() == 0, server.output()
    assert sorted(r["request_id"] for r in read_captures(store, MODEL)) == [
        f"shut-{i}:{j}" for i in range(3) for j in range(2)
    ]
    assert "drift monitor stopped with 6 rows of an incomplete window unchecked" in server.output()
