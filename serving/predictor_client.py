"""The drift transformer's calls to its predictor: one pooled ``aiohttp.ClientSession``, KServe V1 or V2.

KServe's own transformer path (``Model.predict`` -> ``InferenceRESTClient``) raises
``httpx.HTTPStatusError`` for every error answer of the predictor, and the server turns that into
HTTP 500: a client whose request the predictor refused would be told the server failed.
``PredictorClient`` maps the predictor's answer instead:

- 400 -> ``PredictorRejected`` (a ``kserve.errors.InvalidInput``: HTTP 400, the predictor's message);
- other 4xx -> ``PredictorError`` with the same status and message;
- 503 and 504 pass through; any other 5xx -> 502 (the gateway's upstream failed);
- predictor unreachable -> 502, no answer within the timeout -> 504.

``add_error_handler`` makes the server answer a ``PredictorError`` with its status and KServe's
error body ``{"error": message}``. ``infer`` also returns the model version the predictor
names in its ``x-kfloop-model-version`` header (V1 answers carry no version in the body). When the client's protocol is not the predictor's, the body is
rebuilt from the decoded matrix (``v1_body`` / ``v2_body``) and the answer converted back.

The client is aiohttp, not httpx: a call costs ~0.3 ms of CPU against httpx's ~0.8-1 ms, and httpx's
pool checks every pooled connection on each request (most of the transformer's CPU at 16 concurrent
requests; ``benchmarks/serving.py``).
"""

from __future__ import annotations

import asyncio
from http import HTTPStatus
from typing import Mapping, NamedTuple, Sequence

import aiohttp
import numpy as np
import orjson
from fastapi.responses import JSONResponse
from kserve.errors import InvalidInput

from kfloop.inference import OUTPUT_NAME, Decoded
from kfloop.schema import FeatureSchema

INFERENCE_HEADER = "inference-header-content-length"
MODEL_VERSION_HEADER = "x-kfloop-model-version"  # set by kfloop's predictor: the version that answered
FORWARDED_HEADERS = ("authorization", "traceparent", "tracestate", "x-b3-traceid", "x-b3-spanid",
                     "x-b3-parentspanid", "x-b3-sampled")
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

    def __init__(self, base_url: str, model_name: str, protocol: str, timeout: float = 600.0,
                 retries: int = 0, max_connections: int = 100):
        if protocol not in ("v1", "v2"):
            raise ValueError(f"predictor protocol {protocol!r} is not supported: expected 'v1' or 'v2'")
        self.base_url, self.protocol = base_url.rstrip("/"), protocol
        self.path = f"/v1/models/{model_name}:predict" if protocol == "v1" else f"/v2/models/{model_name}/infer"
        self.timeout, self.retries, self.max_connections = timeout, retries, max_connections
        self._session: aiohttp.ClientSession | None = None

    @property
    def url(self) -> str:
        return self.base_url + self.path

    def _pool(self) -> aiohttp.ClientSession:
        """The session, created on first use inside the server's event loop."""
        if self._session is None:
            timeout = aiohttp.ClientTimeout(total=self.timeout, sock_connect=min(self.timeout, 5.0))
            self._session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=self.max_connections),
                                                  timeout=timeout)
        return self._session

    async def infer(self, body: dict | bytes, headers: Mapping[str, str],
                    json_length: int | None = None) -> tuple[dict, str | None]:
        """The predictor's JSON answer to ``body`` and the model version its header names (None without
        one); raises ``PredictorRejected``/``PredictorError``."""
        content = body if isinstance(body, bytes) else orjson.dumps(body, option=orjson.OPT_SERIALIZE_NUMPY)
        sent = {"content-type": "application/json", **headers}
        if json_length is not None:
            sent[INFERENCE_HEADER] = str(json_length)
        try:
            answer = await self._post(content, sent)
        except asyncio.TimeoutError as e:
            raise PredictorError(HTTPStatus.GATEWAY_TIMEOUT,
                                 f"predictor at {self.url} did not answer within {self.timeout}s") from e
        except aiohttp.ClientError as e:
            raise PredictorError(HTTPStatus.BAD_GATEWAY,
                                 f"predictor at {self.url} is unreachable: {e.__class__.__name__}: {e}") from e
        if answer.status >= 400:
            raise _error(answer)
        return _decode_answer(answer), answer.model_version

    async def _post(self, content: bytes, headers: dict) -> _Answer:
        """POST, retrying a failed connect ``retries`` times (as httpx's transport retries did)."""
        failed = 0
        while True:
            try:
                async with self._pool().post(self.url, data=content, headers=headers) as response:
                    return _Answer(response.status, response.headers.get(INFERENCE_HEADER),
                                   response.headers.get(MODEL_VERSION_HEADER), await response.read())
            except aiohttp.ClientConnectorError:
                failed += 1
                if failed > self.retries:
                    raise

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None


class _Answer(NamedTuple):
    """The predictor's answer, read whole: status, inference header (binary V2), model version, body."""

    status: int
    json_length: str | None
    model_version: str | None
    content: bytes


def forwarded_headers(headers: Mapping[str, str] | None, request_id: str) -> dict[str, str]:
    """Tracing and authorization headers of the client's request, and the request id."""
    out = {k: headers[k] for k in FORWARDED_HEADERS if headers and k in headers}
    out["x-request-id"] = request_id
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


def _decode_answer(answer: _Answer) -> dict:
    if answer.json_length is None:
        return orjson.loads(answer.content)
    from kserve.protocol.infer_type import InferResponse

    rest, _ = InferResponse.from_bytes(answer.content, int(answer.json_length)).to_rest()
    return rest


async def error_handler(_, exc: PredictorError) -> JSONResponse:
    return JSONResponse(status_code=exc.status, content={"error": exc.message})


def add_error_handler(app) -> None:
    """Answer ``PredictorError`` with its status (KServe would answer 500)."""
    app.add_exception_handler(PredictorError, error_handler)


# -- bodies for a predictor on the other protocol -----------------------------------------------


def v1_body(decoded: Decoded, schema: FeatureSchema) -> dict:
    """``{"instances": [...]}`` in schema order from the decoded matrix (missing/unseen as null)."""
    return {"instances": [list(row) for row in zip(*_columns(decoded, schema))]}


def v2_body(decoded: Decoded, schema: FeatureSchema, request_id: str) -> dict:
    """V2 inputs, one per feature (BYTES for categorical, FP64 for numeric), from the decoded matrix."""
    inputs = [{"name": f.name, "shape": [decoded.n_rows], "datatype": "BYTES" if f.kind == "categorical" else "FP64",
               "data": column} for f, column in zip(schema.features, _columns(decoded, schema))]
    return {"id": request_id, "inputs": inputs}


def v2_answer(model_name: str, version: str | None, request_id: str, predictions: Sequence) -> dict:
    """A V2 answer with the ``predictions`` output, from V1 predictions."""
    values = np.asarray(predictions, dtype=np.float32)
    return {"model_name": model_name, "model_version": version, "id": request_id,
            "outputs": [{"name": OUTPUT_NAME, "shape": list(values.shape), "datatype": "FP32",
                         "data": values.ravel().tolist()}]}


def _columns(decoded: Decoded, schema: FeatureSchema) -> list[list]:
    """Each feature's values: numbers, category names, None for missing (float32 round-trips exactly)."""
    columns = []
    for j, feature in enumerate(schema.features):
        values = decoded.X[:, j].tolist()
        if feature.kind == "categorical":
            categories = feature.categories
            columns.append([None if v != v else categories[int(v)] for v in values])
        else:
            columns.append([None if v != v else v for v in values])
    return columns
