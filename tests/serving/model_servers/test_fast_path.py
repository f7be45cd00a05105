"""``InferenceFastPath`` as an ASGI application: which requests it answers itself and which it leaves
to KServe's application, and how failures become KServe's error answers. (That its answers are the
ones KServe's own path gives is tested on real servers: test_predictor.py, test_transformer.py.)"""

from __future__ import annotations

import asyncio

import orjson
import pytest
from kserve.errors import InvalidInput
from kserve.metrics import PREDICT_HIST_TIME

from kfloop.serving.model_servers.fast_path import InferenceFastPath, Reply, UseKServePath

V1, V2 = "/v1/models/m:predict", "/v2/models/m/infer"


class EchoModel:
    """Answers with what it was given; ``fail`` makes it raise instead."""

    name, ready = "m", True

    def __init__(self, fail: Exception | None = None):
        self.fail, self.calls = fail, []

    async def infer_json(self, protocol, body, raw, headers):
        self.calls.append((protocol, body, raw, headers))
        if self.fail is not None:
            raise self.fail
        return Reply(orjson.dumps({"protocol": protocol, "body": body}), {"x-request-id": "r-1"})


class KServeApp:
    """Stands in for KServe's application: records what reached it."""

    def __init__(self):
        self.bodies = []

    async def __call__(self, scope, receive, send):
        message = await receive()
        self.bodies.append((scope["path"], message.get("body", b"")))
        await send({"type": "http.response.start", "status": 299, "headers": []})
        await send({"type": "http.response.body", "body": b"kserve"})


def call(
    app,
    path: str,
    body: bytes = b'{"instances": [[1]]}',
    method: str = "POST",
    headers: list[tuple[bytes, bytes]] | None = None,
    chunks: int = 1,
):
    """One HTTP request through ``app``; returns (status, headers dict, body)."""
    scope = {
        "type": "http",
        "method": method,
        "path": path,
        "headers": [(b"content-type", b"application/json")] if headers is None else headers,
    }
    size = -(-len(body) // chunks) or 1
    parts = [body[i : i + size] for i in range(0, len(body), size)] or [b""]
    incoming = [{"type": "http.request", "body": p, "more_body": i < len(parts) - 1} for i, p in enumerate(parts)]
    sent = []

    async def receive():
        return incoming.pop(0) if incoming else {"type": "http.disconnect"}

    async def send(message):
        sent.append(message)

    asyncio.run(app(scope, receive, send))
    start, end = sent
    return start["status"], {k.decode(): v.decode() for k, v in start["headers"]}, end["body"]


def fast(model=None):
    kserve = KServeApp()
    return InferenceFastPath(kserve, model or EchoModel()), kserve


def test_v1_and_v2_json_requests_of_the_model_are_answered_directly():
    app, kserve = fast()
    for path, protocol in ((V1, "v1"), (V2, "v2")):
        status, headers, body = call(app, path, b'{"x": 1}', chunks=3)
        assert status == 200
        assert orjson.loads(body) == {"protocol": protocol, "body": {"x": 1}}
        assert headers["content-type"] == "application/json" and headers["x-request-id"] == "r-1"
        assert headers["content-length"] == str(len(body))
    assert kserve.bodies == []
    assert [c[2] for c in app.model.calls] == [b'{"x": 1}'] * 2  # the raw body, as received


def test_a_body_without_a_content_type_is_parsed_as_json_as_kserve_does():
    app, kserve = fast()
    assert call(app, V1, headers=[])[0] == 200 and kserve.bodies == []


@pytest.mark.parametrize(
    "path, method, headers",
    [
        ("/v1/models/other:predict", "POST", None),
        ("/v2/models/m/ready", "GET", None),
        ("/v1/models/m:explain", "POST", None),
        (V1, "POST", [(b"content-type", b"application/x-www-form-urlencoded")]),
        (V2, "POST", [(b"content-type", b"application/json"), (b"inference-header-content-length", b"14")]),
        (V1, "POST", [(b"content-type", b"application/json"), (b"ce-specversion", b"1.0"), (b"ce-id", b"1")]),
    ],
    ids=["other model", "GET", "other verb", "not JSON", "V2 binary", "binary CloudEvent"],
)
def test_everything_else_goes_to_kserve_untouched(path, method, headers):
    app, kserve = fast()
    sent = b'{"inputs": []}'  # also a well-formed V2 binary body whose JSON header is all of it
    status, _, body = call(app, path, sent, method=method, headers=headers)
    assert (status, body) == (299, b"kserve")
    assert app.model.calls == []
    if method == "POST":
        assert kserve.bodies == [(path, sent)]


def test_disabled_sends_every_request_to_kserve():
    kserve = KServeApp()
    app = InferenceFastPath(kserve, EchoModel(), enabled=False)
    assert call(app, V1)[0] == 299 and kserve.bodies == [(V1, b'{"instances": [[1]]}')]


def test_a_request_the_model_declines_reaches_kserve_with_its_body():
    app, kserve = fast(EchoModel(fail=UseKServePath()))
    assert call(app, V2, b'{"inputs": [], "outputs": []}', chunks=4)[0] == 299
    assert kserve.bodies == [(V2, b'{"inputs": [], "outputs": []}')]


class Rejected(Exception):
    status, message = 413, "too big for the predictor"


@pytest.mark.parametrize(
    "error, status, message",
    [
        (InvalidInput("feature 'age' at row 0: expected a number"), 400, "feature 'age' at row 0: expected a number"),
        (Rejected(), 413, "too big for the predictor"),
        (RuntimeError("boom"), 500, "RuntimeError : boom"),
    ],
    ids=["invalid input", "status of its own", "anything else"],
)
def test_failures_become_kserve_error_answers(error, status, message):
    app, _ = fast(EchoModel(fail=error))
    got_status, headers, body = call(app, V1)
    assert (got_status, orjson.loads(body)) == (status, {"error": message})
    assert headers["content-type"] == "application/json"


def test_malformed_json_is_400_as_kserve_words_it():
    app, _ = fast()
    status, _, body = call(app, V1, b'{"instances": [')
    assert status == 400 and orjson.loads(body)["error"].startswith("Unrecognized request format: ")
    assert app.model.calls == []


def test_a_model_not_ready_is_503():
    model = EchoModel()
    model.ready = False
    app, _ = fast(model)
    status, _, body = call(app, V1)
    assert (status, orjson.loads(body)) == (503, {"error": "Model with name m is not ready."})


def test_answered_requests_are_counted_in_kserve_predict_histogram():
    before = _predict_count("m")
    app, _ = fast()
    call(app, V1)
    call(app, V2)
    assert _predict_count("m") == before + 2


def _predict_count(model: str) -> float:
    for metric in PREDICT_HIST_TIME.collect():
        for sample in metric.samples:
            if sample.name.endswith("_count") and sample.labels == {"model_name": model}:
                return sample.value
    return 0.0
