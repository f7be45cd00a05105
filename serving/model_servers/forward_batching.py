"""Coalesced forwarding: the rows of concurrent V1 requests sent to the predictor in one call.

The drift transformer forwards every request to the predictor over HTTP. At 16 concurrent one-row
requests that is 16 predictor requests, each paying the predictor's HTTP handling, JSON answer and
socket writes, and the transformer's own client side, for one row of XGBoost each
(``benchmarks/serving.py``: behind the transformer the predictor spent as much CPU per request as
the transformer itself). ``ForwardCoalescer`` keeps at most ``max_in_flight`` predictor calls
running; requests that arrive meanwhile wait, and the next call takes all of them that go together
(up to ``max_rows`` rows and ``max_bytes`` bytes of request bodies) as one ``{"instances": [...]}``
body, and splits the answer's ``predictions`` back by request. Nothing waits for a batch to fill: a
request that finds a call slot free is sent at once, as received, so a lone client sees no change.

Requests go together only when nothing about them differs for the predictor: V1 bodies holding
nothing but ``instances``, of the same row layout (objects or lists), with the same
``authorization``, and without tracing headers (``traceparent``, B3: a combined call could carry one
trace only, so a traced request is always sent alone, as before). Every request keeps its own
request id in the transformer's answer and captures; a combined call carries the first one's.

A combined call the predictor refuses (any 4xx: a row it refuses, or more rows or bytes than its own
``--max_batch_size`` / ``--max_body_bytes``) is sent again request by request, so each request gets
its own answer or its own error, and later combined calls stay below the refused call's rows and
bytes; any other failure (a 5xx, a timeout, an unreachable predictor) is every waiting request's
answer, as it would have been one by one. An answer with
another number of predictions than rows sent is a 502, as for a single request.

On a cluster the predictor's revisions split traffic by HTTP request (a Knative canary's share), so
with coalescing a canary gets the same share of calls, and so of rows on average, in fewer calls.
"""

from __future__ import annotations

import asyncio
import dataclasses
import re
from collections.abc import Mapping
from http import HTTPStatus

import orjson

from kfloop.serving.model_servers.predictor_client import (
    PredictorAnswer,
    PredictorClient,
    PredictorError,
    PredictorRejected,
)

TRACING_HEADERS = frozenset(
    {"traceparent", "tracestate", "x-b3-traceid", "x-b3-spanid", "x-b3-parentspanid", "x-b3-sampled"}
)
DEFAULT_MAX_IN_FLIGHT = 2  # predictor calls at once: one answering while the next one's rows gather


@dataclasses.dataclass
class _Waiting:
    instances: list
    content: bytes
    headers: Mapping[str, str]
    key: tuple  # what must be equal for requests to go together
    future: asyncio.Future


class ForwardCoalescer:
    """Forwards V1 ``instances`` to the predictor, combining concurrent requests (see the module)."""

    def __init__(
        self,
        client: PredictorClient,
        max_rows: int,
        max_bytes: int,
        max_in_flight: int = DEFAULT_MAX_IN_FLIGHT,
    ):
        self.client, self.max_rows, self.max_bytes, self.max_in_flight = client, max_rows, max_bytes, max_in_flight
        self._waiting: list[_Waiting] = []
        self._in_flight = 0
        self.calls = 0  # predictor calls made
        self.requests = 0  # requests answered through them

    async def infer(self, instances: list, content: bytes, headers: Mapping[str, str]) -> PredictorAnswer:
        """The predictor's answer to the V1 request ``content`` (its ``instances``, parsed), sent as is or
        together with concurrent requests; raises ``PredictorRejected``/``PredictorError``."""
        if self._in_flight < self.max_in_flight and not self._waiting:
            return await self._alone(content, headers)
        if TRACING_HEADERS.intersection(headers):
            return await self._alone(content, headers)
        shape = "objects" if instances and isinstance(instances[0], dict) else "rows"
        waiting = _Waiting(
            instances,
            content,
            headers,
            (shape, headers.get("authorization")),
            asyncio.get_running_loop().create_future(),
        )
        self._waiting.append(waiting)
        self._start_calls()
        return await waiting.future

    async def _alone(self, content: bytes, headers: Mapping[str, str]) -> PredictorAnswer:
        self._in_flight += 1
        try:
            self.calls, self.requests = self.calls + 1, self.requests + 1
            return await self.client.infer(content, headers)
        finally:
            self._in_flight -= 1
            self._start_calls()

    def _start_calls(self) -> None:
        while self._waiting and self._in_flight < self.max_in_flight:
            batch = self._take()
            self._in_flight += 1
            asyncio.get_running_loop().create_task(self._call(batch))

    def _take(self) -> list[_Waiting]:
        """The oldest waiting request and the later ones that go with it, within the row and byte limits."""
        first = self._waiting[0]
        batch, rows, size, rest = [first], len(first.instances), len(first.content), []
        for waiting in self._waiting[1:]:
            fits = rows + len(waiting.instances) <= self.max_rows and size + len(waiting.content) <= self.max_bytes
            if waiting.key == first.key and fits:
                batch.append(waiting)
                rows, size = rows + len(waiting.instances), size + len(waiting.content)
            else:
                rest.append(waiting)
        self._waiting = rest
        return batch

    async def _call(self, batch: list[_Waiting]) -> None:
        try:
            batch = [w for w in batch if not w.future.done()]  # a client that went away
            if len(batch) == 1:
                await _settle(batch[0], self.client.infer(batch[0].content, batch[0].headers))
            elif batch:
                await self._combined(batch)
            self.calls += 1 if batch else 0
            self.requests += len(batch)
        finally:
            self._in_flight -= 1
            self._start_calls()

    async def _combined(self, batch: list[_Waiting]) -> None:
        content = combined_body([w.content for w in batch]) or orjson.dumps(
            {"instances": [row for w in batch for row in w.instances]}
        )
        try:
            answer = await self.client.infer(content, batch[0].headers)
        except (PredictorRejected, PredictorError) as e:
            if isinstance(e, PredictorError) and e.status >= 500:
                for w in batch:
                    _fail(w, e)
                return
            # refused: each request on its own, for its own answer; later calls stay below this one's size
            self.max_rows = min(self.max_rows, max(sum(len(w.instances) for w in batch) - 1, 1))
            self.max_bytes = min(self.max_bytes, max(sum(len(w.content) for w in batch) - 1, 1))
            self.calls += len(batch)
            await asyncio.gather(*(_settle(w, self.client.infer(w.content, w.headers)) for w in batch))
            return
        except Exception as e:  # noqa: BLE001 - the predictor's failure is every waiting request's answer
            for w in batch:
                _fail(w, e)
            return
        predictions = answer.doc.get("predictions") if isinstance(answer.doc, dict) else None
        if not isinstance(predictions, list) or len(predictions) != sum(len(w.instances) for w in batch):
            error = PredictorError(
                HTTPStatus.BAD_GATEWAY,
                f"predictor at {self.client.url} answered {len(predictions or ())} predictions "
                f"for {sum(len(w.instances) for w in batch)} rows",
            )
            for w in batch:
                _fail(w, error)
            return
        start = 0
        for w in batch:
            stop = start + len(w.instances)
            if not w.future.done():
                w.future.set_result(PredictorAnswer({"predictions": predictions[start:stop]}, answer.version, None))
            start = stop


_INSTANCES_START = re.compile(rb'\s*\{\s*"instances"\s*:\s*\[')


def combined_body(contents: list[bytes]) -> bytes | None:
    """One ``{"instances": [...]}`` body holding the rows of ``contents`` (bodies that parsed as an object of
    ``instances`` alone), spliced from their text without encoding the rows again (at 100 rows of 30 numbers
    ``orjson.dumps`` of the parsed rows was a tenth of the transformer's request path); None when a body is
    not plainly ``{"instances": [...]}`` (the key written with escapes, or named twice, as a parser keeps the
    last one): then the rows are encoded."""
    parts = []
    for content in contents:
        start = _INSTANCES_START.match(content)
        end = content.rstrip()
        if start is None or not end.endswith(b"}") or content.count(b'"instances"') != 1:
            return None
        end = end[:-1].rstrip()
        part = content[start.end() : len(end) - 1]
        if not end.endswith(b"]") or not part.strip():  # (an empty list: no rows to join)
            return None
        parts.append(part)
    return b'{"instances":[' + b",".join(parts) + b"]}"


async def _settle(waiting: _Waiting, call) -> None:
    try:
        answer = await call
    except Exception as e:  # noqa: BLE001 - the caller gets the error
        _fail(waiting, e)
        return
    if not waiting.future.done():
        waiting.future.set_result(answer)


def _fail(waiting: _Waiting, error: Exception) -> None:
    if not waiting.future.done():
        waiting.future.set_exception(error)
