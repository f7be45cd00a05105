"""The drift transformer's calls to its predictor: pooled keep-alive connections, KServe V1 or V2.

KServe's own transformer path (``Model.predict`` -> ``InferenceRESTClient``) raises
``httpx.HTTPStatusError`` for every error answer of the predictor, and the server turns that into
HTTP 500: a client whose request the predictor refused would be told the server failed.
``PredictorClient`` maps the predictor's answer instead:

- 400 -> ``PredictorRejected`` (a ``kserve.errors.InvalidInput``: HTTP 400, the predictor's message);
- other 4xx -> ``PredictorError`` with the same status and message;
- 503 and 504 pass through; any other 5xx -> 502 (the gateway's upstream failed);
- predictor unreachable -> 502, no answer within the timeout -> 504.

``add_error_handler`` makes the server answer a ``PredictorError`` with its status and KServe's
error body ``{"error": message}``. ``infer`` also returns the model version the predictor names in
its ``x-kfloop-model-version`` header (V1 answers carry no version in the body) and the body as
received, which the transformer's fast path passes on without encoding it again. When the client's
protocol is not the predictor's, the transformer sends a body rebuilt by ``kfloop.inference.requests``
and converts the answer with ``kfloop.inference.responses``.

The connections are ``serving/http_pool.py``'s (keep-alive, httptools): a call costs ~0.10 ms of
CPU, against ~0.27 ms with aiohttp and ~0.8-1 ms with httpx, whose pool checks every pooled
connection on each request (``benchmarks/predictor_client.py``).
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from http import HTTPStatus
from typing import NamedTuple

import orjson
from fastapi.responses import JSONResponse
from kserve.errors import InvalidInput

from kfloop.names import MODEL_VERSION_HEADER, REQUEST_ID_HEADER
from kfloop.serving.model_servers.http_pool import HttpPool, UpstreamClosed, UpstreamUnreachable

INFERENCE_HEADER = "inference-header-content-length"
FORWARDED_HEADERS = (
    "authorization",
    "traceparent",
    "tracestate",
    "x-b3-traceid",
    "x-b3-spanid",
    "x-b3-parentspanid",
    "x-b3-sampled",
)
PASS_THROUGH_5XX = (HTTPStatus.SERVICE_UNAVAILABLE, HTTPStatus.GATEWAY_TIMEOUT)


class PredictorError(Exception):
    """The predictor refused or failed a request; ``status`` is what the transformer answers."""

    def __init__(self, status: int, message: str):
        self.status, self.message = int(status), message
        super().__init__(message)


class PredictorRejected(InvalidInput):
    """The predictor answered 400: KServe's handler answers 400 with the predictor's message."""

    status = 400


class PredictorClient:
    """POSTs inference requests to ``base_url`` on ``protocol`` ("v1" or "v2"), pooling connections."""

    def __init__(
        self,
        base_url: str,
        model_name: str,
        protocol: str,
        timeout: float = 600.0,
        retries: int = 0,
        max_connections: int = 100,
    ):
        if protocol not in ("v1", "v2"):
            raise ValueError(f"predictor protocol {protocol!r} is not supported: expected 'v1' or 'v2'")
        self.base_url, self.protocol = base_url.rstrip("/"), protocol
        self.path = f"/v1/models/{model_name}:predict" if protocol == "v1" else f"/v2/models/{model_name}/infer"
        self.timeout = timeout
        self._pool = HttpPool(
            self.base_url, max_connections, connect_timeout=min(timeout, 5.0), connect_retries=retries
        )

    @property
    def url(self) -> str:
        return self.base_url + self.path

    async def infer(
        self, body: dict | bytes, headers: Mapping[str, str], json_length: int | None = None
    ) -> PredictorAnswer:
        """The predictor's answer to ``body``; raises ``PredictorRejected``/``PredictorError``."""
        content = body if isinstance(body, bytes) else orjson.dumps(body, option=orjson.OPT_SERIALIZE_NUMPY)
        sent = {"content-type": "application/json", **headers}
        if json_length is not None:  # a binary V2 body: KServe refuses one sent as application/json
            sent["content-type"] = "application/octet-stream"
            sent[INFERENCE_HEADER] = str(json_length)
        try:
            response = await self._pool.post(self.path, content, sent, self.timeout)
        except asyncio.TimeoutError as e:
            raise PredictorError(
                HTTPStatus.GATEWAY_TIMEOUT, f"predictor at {self.url} did not answer within {self.timeout}s"
            ) from e
        except (UpstreamUnreachable, UpstreamClosed) as e:
            raise PredictorError(HTTPStatus.BAD_GATEWAY, f"predictor at {self.url}: {e}") from e
        answer = _Answer(
            response.status,
            response.headers.get(INFERENCE_HEADER),
            response.headers.get(MODEL_VERSION_HEADER),
            response.body,
        )
        if answer.status >= 400:
            raise _error(answer)
        try:
            if answer.json_length is None:
                return PredictorAnswer(orjson.loads(answer.content), answer.model_version, answer.content)
            return PredictorAnswer(_decode_binary(answer), answer.model_version, None)
        except ValueError as e:  # orjson's JSONDecodeError, or a broken binary answer
            raise PredictorError(
                HTTPStatus.BAD_GATEWAY,
                f"predictor at {self.url} answered with a body that is not an inference answer: {e}",
            ) from e

    async def aclose(self) -> None:
        await self._pool.aclose()


class PredictorAnswer(NamedTuple):
    """A successful answer: the JSON document, the model version the predictor's header names (None
    without one), and the body as received when it is plain JSON (None for a binary V2 answer)."""

    doc: dict
    version: str | None
    content: bytes | None


class _Answer(NamedTuple):
    """The predictor's answer, read whole: status, inference header (binary V2), model version, body."""

    status: int
    json_length: str | None
    model_version: str | None
    content: bytes


def forwarded_headers(headers: Mapping[str, str] | None, request_id: str) -> dict[str, str]:
    """Tracing and authorization headers of the client's request, and the request id."""
    out = {k: headers[k] for k in FORWARDED_HEADERS if headers and k in headers}
    out[REQUEST_ID_HEADER] = request_id
    return out


def _error(answer: _Answer) -> Exception:
    status, message = answer.status, _message(answer)
    if status == HTTPStatus.BAD_REQUEST:
        return PredictorRejected(message)
    if status < 500:
        return PredictorError(status, message)
    if status in PASS_THROUGH_5XX:
        return PredictorError(status, f"predictor: {message}")
    return PredictorError(HTTPStatus.BAD_GATEWAY, f"predictor failed with HTTP {status}: {message}")


def _message(answer: _Answer) -> str:
    """The error text of a KServe answer (``{"error": ...}``, FastAPI's ``{"detail": ...}``), else the body."""
    try:
        doc = orjson.loads(answer.content)
    except orjson.JSONDecodeError:
        return answer.content.decode("utf-8", "replace")[:1000] or f"HTTP {answer.status}"
    if isinstance(doc, dict) and ("error" in doc or "detail" in doc):
        return str(doc.get("error", doc.get("detail")))
    return str(doc)[:1000]


def _decode_binary(answer: _Answer) -> dict:
    """A V2 answer with binary outputs (``inference-header-content-length``) as its JSON form."""
    from kserve.protocol.infer_type import InferResponse

    rest, _ = InferResponse.from_bytes(answer.content, int(answer.json_length)).to_rest()
    return rest


async def error_handler(_, exc: PredictorError) -> JSONResponse:
    return JSONResponse(status_code=exc.status, content={"error": exc.message})


def add_error_handler(app) -> None:
    """Answer ``PredictorError`` with its status (KServe would answer 500)."""
    app.add_exception_handler(PredictorError, error_handler)
