"""A fast path for a KServe model server's two inference routes, in front of FastAPI's middlewares
and routes.

KServe 0.20 answers every request through FastAPI: five middlewares, routing, a pydantic model
of the V2 request, its data plane and ``Model.__call__``. For a one-row request that stack is
most of the server's CPU (``benchmarks/serving.py``), and the drift transformer pays it on top
of the predictor's. ``InferenceFastPath`` answers the served model's own

- ``POST /v1/models/<name>:predict`` and
- ``POST /v2/models/<name>/infer``

when the body is plain JSON: it parses the body with orjson, calls the model's
``infer_json(protocol, body, raw, headers)`` and writes the ``Reply`` (or, when the model raises
``UseKServePath``, hands the request to KServe's path after all). Answers and errors are
KServe's: ``{"error": message}`` with 400 for ``InvalidInput`` (and malformed JSON), 503 while
the model is not ready, the status of an exception that carries one (``status`` attribute), 500
for anything else (logged). KServe's ``request_predict_seconds`` histogram is observed as
``Model.__call__`` observes it.

Everything else goes to KServe's application: other paths and models, metadata, health and metrics
routes, V2 binary bodies (``inference-header-content-length``), CloudEvents (binary mode, ``ce-*``
headers, and structured, ``application/cloudevents+json``: KServe unwraps their ``data`` and answers
with a CloudEvent), bodies sent as another content type (KServe answers those), and every request
when per-request logging is on (``enabled=False``), so KServe's access and latency logs stay whole.

On both paths, whether or not the fast path is enabled, so that a flag never changes which requests
are accepted: an inference request without a content-type is read as JSON (tritonclient's JSON mode,
``curl -d``); a compressed body (``content-encoding`` gzip, deflate, ...) is a 415; the version
routes ``/v2/models/<name>/versions/<v>/...`` are served for the model's own version (404 for any
other); and KServe's V2 JSON answers lose the ``null`` fields the OIP schema types as objects or
strings. A V2 request for binary outputs (``binary_data_output``, an output's ``binary_data``) gets
them (``binary_reply``); an unknown requested output is the model's 400.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any, NamedTuple, Protocol

import orjson
from kserve.errors import InvalidInput
from kserve.metrics import PREDICT_HIST_TIME

from kfloop.errors import InvalidRequest
from kfloop.inference.requests import check_binary_request
from kfloop.inference.responses import BINARY_CONTENT_TYPE, binary_answer
from kfloop.serving.body_limit import replay_body

logger = logging.getLogger(__name__)

# Structured CloudEvents (application/cloudevents+json) go to KServe's path, which unwraps their data
# and answers with a CloudEvent.
JSON_CONTENT_TYPES = frozenset({b"application/json", b"application/ld+json"})
_FALLBACK_HEADERS = frozenset({b"inference-header-content-length", b"ce-specversion"})

INFERENCE_HEADER = "inference-header-content-length"

ASGIApp = Callable[[dict, Callable, Callable], Awaitable[None]]


class Reply(NamedTuple):
    """An inference answer: the JSON body, encoded, and extra response headers."""

    content: bytes
    headers: dict[str, str]


class JsonInferenceModel(Protocol):
    """What the fast path needs of a model (the predictor and the drift transformer have it)."""

    name: str
    ready: bool

    async def infer_json(self, protocol: str, body: Any, raw: bytes, headers: dict[str, str]) -> Reply:
        """Answer ``body`` (parsed JSON; ``raw`` as received) on ``protocol`` "v1" or "v2"."""


class InferenceFastPath:
    """An ASGI application: the model's inference routes answered directly, the rest by ``app``."""

    def __init__(self, app: ASGIApp, model: JsonInferenceModel, enabled: bool = True):
        self.app, self.model, self.enabled = app, model, enabled
        self.routes = {f"/v1/models/{model.name}:predict": "v1", f"/v2/models/{model.name}/infer": "v2"}
        self.versions_prefix = f"/v2/models/{model.name}/versions/"
        self._histogram = PREDICT_HIST_TIME.labels(model_name=model.name)

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] == "http":
            if scope["path"].startswith(self.versions_prefix):
                scope = self._unversioned(scope)
                if scope is None:
                    return await _send_json(send, 404, _error_body(self._unknown_version_message()))
            if scope["method"] == "POST":
                encoding = _header(scope["headers"], b"content-encoding")
                if encoding is not None and encoding.strip().lower() not in (b"", b"identity"):
                    message = (
                        f"content-encoding {encoding.decode('latin-1')!r} is not supported: send the body uncompressed"
                    )
                    return await _send_json(send, 415, _error_body(message))
                protocol = self.routes.get(scope["path"])
                if protocol is not None:
                    scope = _with_json_content_type(scope)
                    if self.enabled and _plain_json(scope["headers"]):
                        return await self._serve(protocol, scope, receive, send)
                    if (length := dict(scope["headers"]).get(b"inference-header-content-length")) is not None:
                        receive = await _checked_binary(length, receive, send)  # a malformed one: 400, not 500
                        if receive is None:
                            return
            if scope["path"].startswith("/v2"):
                send = _without_nulls(send)
        await self.app(scope, receive, send)

    def _unversioned(self, scope: dict) -> dict | None:
        """``/v2/models/NAME/versions/V/REST`` as ``/v2/models/NAME/REST`` when V is the version served
        (the one the metadata lists); None for any other version."""
        version, _, rest = scope["path"][len(self.versions_prefix) :].partition("/")
        served = getattr(self.model, "version", None)
        if served is None or version != str(served):
            return None
        path = self.versions_prefix[: -len("versions/")] + rest
        return {**scope, "path": path.rstrip("/"), "raw_path": path.rstrip("/").encode()}

    def _unknown_version_message(self) -> str:
        served = getattr(self.model, "version", None)
        return (
            f"model {self.model.name!r} serves version {served} only"
            if served
            else (f"model {self.model.name!r} has no versions to request")
        )

    async def _serve(self, protocol: str, scope: dict, receive: Callable, send: Callable) -> None:
        raw = await _read_body(receive)
        if raw is None:
            return  # the client went away
        headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
        try:
            reply = await self._answer(protocol, raw, headers)
            status = 200
        except UseKServePath:
            return await self.app(scope, replay_body(raw, receive), send)
        except Exception as e:  # noqa: BLE001 - every failure is answered, as KServe's handlers do
            status, reply = _error_reply(e)
        await _send_json(send, status, reply)

    async def _answer(self, protocol: str, raw: bytes, headers: dict[str, str]) -> Reply:
        if not self.model.ready:
            raise _NotReady(f"Model with name {self.model.name} is not ready.")
        try:
            body = orjson.loads(raw)
        except orjson.JSONDecodeError as e:
            raise InvalidInput(f"Unrecognized request format: {e}") from e
        start = time.perf_counter()
        reply = await self.model.infer_json(protocol, body, raw, headers)
        self._histogram.observe(time.perf_counter() - start)
        return reply


def wrap_application(app, wrapper: Callable[[ASGIApp], ASGIApp]) -> None:
    """Put ``wrapper`` around a Starlette/FastAPI application's whole middleware stack (the stack is
    built on the first request): outside the middlewares KServe adds when its server starts (its
    timing middleware), which ``add_middleware`` cannot reach."""
    build = app.build_middleware_stack
    app.build_middleware_stack = lambda: wrapper(build())


class UseKServePath(Exception):
    """Raised by ``infer_json`` for a request the model leaves to KServe's own path (the fast path
    hands it the body as received)."""


class _NotReady(Exception):
    status = 503


def binary_reply(answer: dict, headers: dict[str, str]) -> Reply:
    """A V2 answer in the binary tensor extension (the client asked for binary outputs)."""
    content, json_length = binary_answer(answer)
    return Reply(
        content,
        {**headers, "content-type": BINARY_CONTENT_TYPE, INFERENCE_HEADER: str(json_length)},
    )


def _header(headers: list[tuple[bytes, bytes]], name: bytes) -> bytes | None:
    return next((v for k, v in headers if k == name), None)


def _with_json_content_type(scope: dict) -> dict:
    """A JSON inference request sent without a content-type (tritonclient's JSON mode, ``curl -d``)
    read as JSON on either path, so that ``--request_logging`` changes nothing that is accepted."""
    headers = scope["headers"]
    if _header(headers, b"content-type") is not None or _header(headers, INFERENCE_HEADER.encode()) is not None:
        return scope
    return {**scope, "headers": [*headers, (b"content-type", b"application/json")]}


def _without_nulls(send: Callable) -> Callable:
    """``send`` for KServe's V2 answers, with the ``null`` fields it writes (``parameters``,
    ``model_version``) left out: the Open Inference Protocol's schema types them as objects and strings.
    Other answers (binary bodies, CloudEvents, anything not JSON) pass unchanged."""
    held: dict = {}
    chunks: list[bytes] = []

    async def wrapped(message: dict) -> None:
        if message["type"] == "http.response.start":
            content_type = dict(message.get("headers", [])).get(b"content-type", b"")
            if content_type.split(b";")[0].strip() == b"application/json":
                held["start"] = message
                return
        elif message["type"] == "http.response.body" and "start" in held:
            chunks.append(message.get("body", b""))
            if message.get("more_body", False):
                return
            body = b"".join(chunks)
            try:
                body = orjson.dumps(_drop_nulls(orjson.loads(body)))
            except orjson.JSONDecodeError:
                pass
            start = held.pop("start")
            headers = [(k, v) for k, v in start.get("headers", []) if k != b"content-length"]
            headers.append((b"content-length", str(len(body)).encode()))
            await send({**start, "headers": headers})
            await send({"type": "http.response.body", "body": body})
            return
        await send(message)

    return wrapped


def _drop_nulls(doc: Any) -> Any:
    if isinstance(doc, dict):
        return {k: _drop_nulls(v) for k, v in doc.items() if v is not None}
    if isinstance(doc, list):
        return [_drop_nulls(v) if isinstance(v, (dict, list)) else v for v in doc]
    return doc


def _error_body(message: str) -> Reply:
    return Reply(orjson.dumps({"error": message}), {})


def _plain_json(headers: list[tuple[bytes, bytes]]) -> bool:
    """A JSON body KServe would parse as is (no binary extension, no binary-mode CloudEvent)."""
    for name, value in headers:
        if name == b"content-type" and value.split(b";")[0].strip().lower() not in JSON_CONTENT_TYPES:
            return False
        if name in _FALLBACK_HEADERS:
            return False
    return True


async def _read_body(receive: Callable) -> bytes | None:
    """The whole request body, or None when the client disconnects first."""
    message = await receive()
    if message["type"] == "http.disconnect":
        return None
    body, more = message.get("body", b""), message.get("more_body", False)
    if not more:
        return body
    chunks = [body]
    while more:
        message = await receive()
        if message["type"] == "http.disconnect":
            return None
        chunks.append(message.get("body", b""))
        more = message.get("more_body", False)
    return b"".join(chunks)


async def _checked_binary(length: bytes, receive: Callable, send: Callable) -> Callable | None:
    """A V2 binary body checked before KServe parses it (``check_binary_request``): the body replayed,
    or None once a malformed one was answered with a 400 (or the client went away)."""
    raw = await _read_body(receive)
    if raw is None:
        return None
    try:
        check_binary_request(raw, length.decode("latin-1"))
    except InvalidRequest as e:
        await _send_json(send, 400, Reply(orjson.dumps({"error": str(e)}), {}))
        return None
    return replay_body(raw, receive)


def _error_reply(e: Exception) -> tuple[int, Reply]:
    """KServe's answer to an exception: its status and ``{"error": message}``."""
    if isinstance(e, InvalidInput):
        status, message = 400, str(e)
    elif isinstance(getattr(e, "status", None), int):
        status, message = e.status, str(getattr(e, "message", None) or e)
    else:
        logger.exception("inference request failed")
        status, message = 500, f"{type(e).__name__} : {e}"
    return status, Reply(orjson.dumps({"error": message}), {})


async def _send_json(send: Callable, status: int, reply: Reply) -> None:
    """The reply as JSON (or the content-type its headers name)."""
    content_type = reply.headers.get("content-type", "application/json")
    headers = [(b"content-type", content_type.encode()), (b"content-length", str(len(reply.content)).encode())]
    headers += [(k.encode("latin-1"), v.encode("latin-1")) for k, v in reply.headers.items() if k != "content-type"]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": reply.content})
