"""ForwardCoalescer: concurrent V1 requests share predictor calls, each gets its own rows back, and a
refused or failed call reaches the right requests."""

from __future__ import annotations

import asyncio

import orjson
import pytest

from kfloop.serving.model_servers.forward_batching import ForwardCoalescer, combined_body
from kfloop.serving.model_servers.predictor_client import PredictorAnswer, PredictorError, PredictorRejected


class RowSumPredictor:
    """A predictor client answering each row with its sum, after a short wait; refuses calls over
    ``max_rows`` rows (400) or ``max_bytes`` bytes (413), and rows holding ``bad`` (400); records the
    calls' row counts and headers."""

    url = "http://predictor.test"

    def __init__(self, max_rows: int = 1000, max_bytes: int = 10**6, bad: float | None = None, fail: int = 0):
        self.max_rows, self.max_bytes, self.bad, self.fail = max_rows, max_bytes, bad, fail
        self.calls: list[tuple[int, dict]] = []

    async def infer(self, content: bytes, headers, json_length=None) -> PredictorAnswer:
        rows = orjson.loads(content)["instances"]
        self.calls.append((len(rows), dict(headers)))
        await asyncio.sleep(0.005)
        if self.fail:
            raise PredictorError(self.fail, "predictor down")
        if len(rows) > self.max_rows:
            raise PredictorRejected(f"{len(rows)} rows: the limit is {self.max_rows}")
        if len(content) > self.max_bytes:
            raise PredictorError(413, "body too large")
        values = [list(r.values()) if isinstance(r, dict) else r for r in rows]
        if self.bad is not None and any(self.bad in v for v in values):
            raise PredictorRejected("a bad row")
        doc = {"predictions": [sum(v) for v in values]}
        return PredictorAnswer(doc, "7", orjson.dumps(doc))


def request(i: int, n: int = 2, objects: bool = False, **headers) -> tuple[list, bytes, dict]:
    rows = [[float(i), float(j)] for j in range(n)]
    if objects:
        rows = [{"a": a, "b": b} for a, b in rows]
    return rows, orjson.dumps({"instances": rows}), {"x-request-id": f"r{i}", **headers}


async def send(coalescer: ForwardCoalescer, requests) -> list:
    return await asyncio.gather(*(coalescer.infer(*r) for r in requests), return_exceptions=True)


def sums(rows) -> list:
    return [sum(r.values()) if isinstance(r, dict) else sum(r) for r in rows]


def test_concurrent_requests_share_calls_and_each_gets_its_own_rows():
    predictor = RowSumPredictor()
    coalescer = ForwardCoalescer(predictor, max_rows=1000, max_bytes=10**6, max_in_flight=1)
    requests = [request(i, n=1 + i % 3) for i in range(20)]
    answers = asyncio.run(send(coalescer, requests))
    for (rows, _, _), answer in zip(requests, answers):
        assert answer.doc["predictions"] == sums(rows) and answer.version == "7"
    assert len(predictor.calls) < len(requests) and sum(n for n, _ in predictor.calls) == sum(
        len(r[0]) for r in requests
    )
    assert coalescer.calls == len(predictor.calls) and coalescer.requests == len(requests)


def test_a_lone_request_goes_as_received():
    predictor = RowSumPredictor()
    coalescer = ForwardCoalescer(predictor, max_rows=1000, max_bytes=10**6)
    rows, content, headers = request(3)
    answer = asyncio.run(coalescer.infer(rows, content, headers))
    assert answer.content is not None and predictor.calls == [(2, headers)]  # the body and headers as sent


def test_only_requests_that_go_together_are_combined():
    predictor = RowSumPredictor()
    coalescer = ForwardCoalescer(predictor, max_rows=1000, max_bytes=10**6, max_in_flight=1)
    requests = [request(0)]  # takes the call slot
    requests += [request(i, objects=i % 2 == 0) for i in range(1, 9)]  # two layouts
    requests += [request(i, authorization="Bearer other") for i in range(9, 12)]
    requests += [request(i, traceparent=f"00-{i:032x}-{i:016x}-01") for i in range(12, 15)]  # always alone
    answers = asyncio.run(send(coalescer, requests))
    for (rows, _, _), answer in zip(requests, answers):
        assert answer.doc["predictions"] == sums(rows)
    traced = [h for _, h in predictor.calls if "traceparent" in h]
    assert len(traced) == 3 and all(n == 2 for n, h in predictor.calls if "traceparent" in h)
    for n, headers in predictor.calls:
        if headers.get("authorization") == "Bearer other":
            assert n == 6  # the three of that authorization, together, and nothing else
    assert len(predictor.calls) == 1 + 2 + 1 + 3  # alone, two layouts, one authorization, three traced


def test_a_refused_combined_call_is_sent_again_one_by_one_and_later_calls_fit():
    predictor = RowSumPredictor(max_rows=5, bad=99.0)
    coalescer = ForwardCoalescer(predictor, max_rows=1000, max_bytes=10**6, max_in_flight=1)
    requests = [request(i) for i in range(8)] + [request(99)]  # one request the predictor refuses
    answers = asyncio.run(send(coalescer, requests))
    for (rows, _, _), answer in zip(requests[:-1], answers[:-1]):
        assert answer.doc["predictions"] == sums(rows)
    assert isinstance(answers[-1], PredictorRejected)  # its own error, no one else's
    assert coalescer.max_rows < 1000  # learned from the refusal
    later = asyncio.run(send(coalescer, [request(i) for i in range(20, 40)]))
    assert all(isinstance(a, PredictorAnswer) for a in later)
    assert max(n for n, _ in predictor.calls[-5:]) <= 5


def test_a_body_limit_refusal_413_is_retried_one_by_one():
    predictor = RowSumPredictor(max_bytes=60)
    coalescer = ForwardCoalescer(predictor, max_rows=1000, max_bytes=10**6, max_in_flight=1)
    requests = [request(i) for i in range(6)]
    answers = asyncio.run(send(coalescer, requests))
    assert [a.doc["predictions"] for a in answers] == [sums(r[0]) for r in requests]


@pytest.mark.parametrize("status", [502, 503])
def test_a_predictor_failure_is_every_waiting_requests_answer(status):
    predictor = RowSumPredictor(fail=status)
    coalescer = ForwardCoalescer(predictor, max_rows=1000, max_bytes=10**6, max_in_flight=1)
    answers = asyncio.run(send(coalescer, [request(i) for i in range(6)]))
    assert all(isinstance(a, PredictorError) and a.status == status for a in answers)
    assert len(predictor.calls) < 6  # not retried one by one: it would fail again


def test_a_client_that_goes_away_is_not_sent():
    predictor = RowSumPredictor()
    coalescer = ForwardCoalescer(predictor, max_rows=1000, max_bytes=10**6, max_in_flight=1)

    async def scenario():
        first = asyncio.ensure_future(coalescer.infer(*request(0)))
        await asyncio.sleep(0)
        gone = asyncio.ensure_future(coalescer.infer(*request(1, n=4)))
        kept = asyncio.ensure_future(coalescer.infer(*request(2, n=3)))
        await asyncio.sleep(0)
        gone.cancel()
        return await first, await kept

    first, kept = asyncio.run(scenario())
    assert kept.doc["predictions"] == [2.0, 3.0, 4.0]
    assert [n for n, _ in predictor.calls] == [2, 3]


@pytest.mark.parametrize(
    "bodies",
    [
        [b'{"instances": [[1, 2], [3, 4]]}', b' {"instances":[[5,6]]}\n'],
        [b'{"instances":[{"a": 1, "b": "x]}"}]}', b'{ "instances" : [ {"a": 2, "b": null} ] }'],
    ],
)
def test_a_combined_body_is_spliced_from_the_bodies_and_holds_their_rows_in_order(bodies):
    combined = combined_body(bodies)
    assert combined is not None
    assert orjson.loads(combined) == {"instances": [row for b in bodies for row in orjson.loads(b)["instances"]]}


@pytest.mark.parametrize(
    "body",
    [
        b'{"instances":[1],"instances":[2]}',  # a parser keeps the last one
        b'{"\\u0069nstances":[[1, 2]]}',  # the key written with an escape
        b'{"instances":[]}',
        b'{"instances":[{"a": "instances"}]}',  # the name in a value: not told apart from a key, so encoded
    ],
)
def test_a_body_that_is_not_plainly_instances_is_encoded_instead(body):
    assert combined_body([b'{"instances":[[0, 0]]}', body]) is None


def test_combined_calls_of_spliced_and_encoded_bodies_answer_alike():
    answers = {}
    for duplicate in (False, True):
        predictor = RowSumPredictor()
        coalescer = ForwardCoalescer(predictor, max_rows=1000, max_bytes=10**6, max_in_flight=1)
        requests = [request(i, n=2) for i in range(8)]
        if duplicate:  # a duplicate key in one body makes the call encode the rows
            rows, content, headers = requests[3]
            requests[3] = (rows, content[:-1] + b',"instances":' + orjson.dumps(rows) + b"}", headers)
        answers[duplicate] = [a.doc["predictions"] for a in asyncio.run(send(coalescer, requests))]
        assert len(predictor.calls) < len(requests)
    assert answers[False] == answers[True] == [sums(request(i, n=2)[0]) for i in range(8)]
