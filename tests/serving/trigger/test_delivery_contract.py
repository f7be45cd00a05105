"""The trigger service as a Knative Trigger's subscriber: the delivery contract, from Knative's documents.

``KnativeDelivery`` plays the broker's filter as Knative Eventing documents it (the data-plane spec,
knative/specs specs/eventing/data-plane.md, and the broker filter handler):

- it POSTs each event in binary or structured mode with ``Prefer: reply`` and no ``Accept``;
- a 2xx with an empty body is a delivered event; a 2xx whose body is neither empty nor a CloudEvent
  is a failed delivery (the filter answers 502: "The response MUST be either empty or a valid
  CloudEvent"); a 2xx carrying a CloudEvent is a reply event (except 202, never a reply);
- 404, 408, 409, 429, 5xx and unreachable subscribers are retried ``retry`` times with
  ``backoffDelay * 2**n`` between attempts (exponential); other 4xx are not retried;
- an undeliverable event goes to the ``deadLetterSink`` with the extensions ``knativeerrorcode``,
  ``knativeerrordest`` and ``knativeerrordata`` (the last response body, base64).

The delivery settings are read from ``manifests/base/trigger-drift.yaml`` (delays scaled down), the
subscriber is a real trigger process on 127.0.0.1."""

from __future__ import annotations

import base64
import json
import re
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest
import yaml

from kfloop.events.cloudevents import make_event, to_structured
from kfloop.names import (
    DECISION_HEADER,
    DECISION_REASON_HEADER,
    DRIFT_DETECTED,
    RUN_HEADER,
    TRIGGER_DEAD_LETTERS_PATH,
)
from kfloop.store.objects import LocalStore, get_json
from tests.conftest import REPO, free_port
from tests.fakes.event_sink import EventSink
from tests.serving.trigger_process import Trigger, drift, kill_fake_runs

pytestmark = pytest.mark.processes  # starts servers / CLI processes on 127.0.0.1

RETRYABLE = {404, 408, 409, 429}
TIME_SCALE = 0.01  # PT1S in the manifest -> 10 ms here


def manifest_delivery() -> dict:
    trigger = yaml.safe_load((REPO / "manifests" / "base" / "trigger-drift.yaml").read_text())
    return trigger["spec"]["delivery"]


def iso_seconds(duration: str) -> float:
    match = re.fullmatch(r"PT([0-9.]+)S", duration)
    assert match, f"unsupported ISO 8601 duration in the manifest: {duration}"
    return float(match[1])


class KnativeDelivery:
    """One Trigger's delivery of events to ``subscriber``, as Knative documents it (module doc)."""

    def __init__(self, subscriber: str, delivery: dict, dead_letter_sink: str):
        self.subscriber, self.dead_letter_sink = subscriber, dead_letter_sink
        self.retry = int(delivery.get("retry", 0))
        self.policy = delivery.get("backoffPolicy", "exponential")
        self.delay = iso_seconds(delivery.get("backoffDelay", "PT0.2S")) * TIME_SCALE
        self.attempts: list[tuple[float, int | None]] = []  # (time, status) per attempt

    def send(self, event: dict, mode: str = "binary") -> dict:
        """Deliver ``event``; returns what Knative would record: delivered, reply, or dead-lettered."""
        headers, body = _encode(event, mode)
        last_status, last_body = None, b""
        for attempt in range(self.retry + 1):
            if attempt:
                n = attempt - 1
                time.sleep(self.delay * (2**n if self.policy == "exponential" else attempt))
            try:
                response = httpx.post(self.subscriber, content=body, headers=headers, timeout=10)
            except httpx.TransportError:
                self.attempts.append((time.monotonic(), None))
                continue  # unreachable: retried
            self.attempts.append((time.monotonic(), response.status_code))
            last_status, last_body = response.status_code, response.content
            if 200 <= response.status_code < 300:
                return self._accepted(response, event)
            if response.status_code not in RETRYABLE and response.status_code < 500:
                break  # e.g. 400: not retried
        return self._dead_letter(event, last_status, last_body)

    def _accepted(self, response: httpx.Response, event: dict) -> dict:
        is_event = "ce-specversion" in response.headers or response.headers.get("content-type", "").startswith(
            "application/cloudevents"
        )
        if response.content and not is_event:
            # the broker filter: "The response MUST be either empty or a valid CloudEvent" -> 502
            return self._dead_letter(event, 502, response.content)
        reply = is_event and response.status_code != 202
        return {"outcome": "reply" if reply else "delivered", "status": response.status_code, "response": response}

    def _dead_letter(self, event: dict, status: int | None, body: bytes) -> dict:
        dead = {
            **event,
            "knativeerrordest": self.subscriber,
            "knativeerrorcode": str(status or 500),
            "knativeerrordata": base64.b64encode(body[:1024]).decode("ascii"),
        }
        headers, payload = _encode(dead, "binary")
        answer = httpx.post(self.dead_letter_sink, content=payload, headers=headers, timeout=10)
        return {"outcome": "dead_letter", "status": status, "dls_status": answer.status_code, "event": dead}


def _encode(event: dict, mode: str) -> tuple[dict, bytes]:
    if mode == "structured":
        headers, body = to_structured(event)
        return {**headers, "prefer": "reply"}, body
    headers = {f"ce-{k}": str(v) for k, v in event.items() if k not in ("data", "datacontenttype")}
    headers.update({"content-type": "application/json", "prefer": "reply"})
    return headers, json.dumps(event.get("data")).encode()


class FlakyProxy:
    """Forwards to ``upstream`` and answers ``fail_status`` instead of the first ``failures`` answers
    (the request still reached the trigger: a lost answer, as when a pod dies after handling it)."""

    def __init__(self, upstream: str, failures: int, fail_status: int = 503):
        self.upstream, self.failures, self.fail_status = upstream, failures, fail_status
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                headers = {k: v for k, v in self.headers.items() if k.lower() not in ("host", "content-length")}
                answer = httpx.post(proxy.upstream + self.path, content=body, headers=headers, timeout=10)
                status, data = answer.status_code, answer.content
                if proxy.failures > 0:
                    proxy.failures -= 1
                    status, data = proxy.fail_status, b'{"error": "upstream connect error"}'
                self.send_response(status)
                for key, value in answer.headers.items():
                    if key.lower().startswith("x-kfloop-") and status == answer.status_code:
                        self.send_header(key, value)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture(scope="module")
def trigger(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("delivery")
    sink = EventSink()
    models = ("churn", "accept-binary", "accept-structured", "asks-json", "flaky", "always-failing", "unreachable")
    models += tuple(f"plain-{i}" for i in range(4))
    flags = ("--consecutive_windows", "2", "--original_source", "sample:churn?n_rows=800")
    process = Trigger(tmp, sink, *flags, new_models=models)
    yield process
    code = process.stop()
    kill_fake_runs(process.home)
    sink.close()
    assert code == 0, process.output()


def delivery_to(url: str, trigger: Trigger) -> KnativeDelivery:
    return KnativeDelivery(url + "/", manifest_delivery(), trigger.url + TRIGGER_DEAD_LETTERS_PATH)


def dead_letters(home: Path) -> list[dict]:
    store = LocalStore(home)
    return [get_json(store, key) for key in store.list("dead-letters/") if key.endswith(".json")]


@pytest.mark.parametrize("mode", ["binary", "structured"])
def test_a_delivery_is_accepted_with_an_empty_202_and_the_decision_in_headers(trigger, mode):
    knative = delivery_to(trigger.url, trigger)
    result = knative.send(drift(0, model=f"accept-{mode}"), mode)
    assert result["outcome"] == "delivered" and result["status"] == 202, result
    response = result["response"]
    assert response.content == b"" and len(knative.attempts) == 1
    assert response.headers[DECISION_HEADER] == "waiting"  # the first of two drifted windows
    assert response.headers[DECISION_REASON_HEADER]  # the policy's reason, on one ASCII line
    started = knative.send(drift(1, model=f"accept-{mode}"), mode)
    assert started["response"].headers[DECISION_HEADER] == "start"
    assert started["response"].headers[RUN_HEADER]


def test_a_json_reply_would_be_a_failed_delivery_so_json_only_goes_to_callers_that_ask(trigger):
    # what the trigger answered before: a 200 with a JSON body, which the broker turns into a 502
    asked = trigger.post(drift(0, model="asks-json"))
    assert asked.status_code == 200 and asked.json()["action"] == "waiting"
    knative = delivery_to(trigger.url, trigger)
    assert knative._accepted(asked, drift(1, model="asks-json"))["outcome"] == "dead_letter"  # the old reply
    for i, accept in enumerate((None, "*/*", "application/cloudevents+json", "application/json;q=0")):
        plain = trigger.post(drift(0, model=f"plain-{i}"), accept=accept)
        assert plain.status_code == 202 and plain.content == b"", accept


def test_an_answer_lost_to_a_5xx_is_retried_and_the_retry_is_a_duplicate(trigger):
    proxy = FlakyProxy(trigger.url, failures=2)
    try:
        knative = delivery_to(proxy.url, trigger)
        event = drift(0, model="flaky")
        result = knative.send(event)
    finally:
        proxy.close()
    assert result["outcome"] == "delivered" and [s for _, s in knative.attempts] == [503, 503, 202]
    assert result["response"].headers[DECISION_HEADER] == "duplicate"  # handled once, at-least-once safe
    gaps = [b[0] - a[0] for a, b in zip(knative.attempts, knative.attempts[1:])]
    base = iso_seconds(manifest_delivery()["backoffDelay"]) * TIME_SCALE
    assert gaps[0] >= base and gaps[1] >= 2 * base  # exponential backoff
    assert trigger.status("flaky")["streak"] == 1


def test_retries_exhausted_go_to_the_dead_letter_sink_which_keeps_the_event(trigger):
    proxy = FlakyProxy(trigger.url, failures=100)
    try:
        knative = delivery_to(proxy.url, trigger)
        event = drift(0, model="always-failing")
        result = knative.send(event, "structured")
    finally:
        proxy.close()
    assert len(knative.attempts) == manifest_delivery()["retry"] + 1
    assert result["outcome"] == "dead_letter" and result["dls_status"] == 202
    (kept,) = [e for e in dead_letters(trigger.home) if e["id"] == event["id"]]
    assert kept["knativeerrorcode"] == "503" and kept["type"] == DRIFT_DETECTED
    assert base64.b64decode(kept["knativeerrordata"]) == b'{"error": "upstream connect error"}'


def test_a_malformed_event_is_not_retried_and_is_dead_lettered_with_the_error(trigger):
    knative = delivery_to(trigger.url, trigger)
    event = make_event(DRIFT_DETECTED, "s", {"model": "churn", "data": {"is_drift": "maybe"}})
    result = knative.send(event)
    assert [s for _, s in knative.attempts] == [400]  # a 400 is final
    assert result["outcome"] == "dead_letter" and result["dls_status"] == 202
    (kept,) = [e for e in dead_letters(trigger.home) if e["id"] == event["id"]]
    assert kept["knativeerrorcode"] == "400"
    assert "is_drift" in json.loads(base64.b64decode(kept["knativeerrordata"]))["error"]
    metrics = httpx.get(f"{trigger.url}/metrics").text
    assert 'kfloop_trigger_events_total{outcome="dead_letter",type="io.kfloop.drift.detected"}' in metrics


def test_an_event_naming_an_unknown_model_is_not_retried_and_stores_no_state(trigger):
    knative = delivery_to(trigger.url, trigger)
    event = drift(0, model="ghost")  # not registered, not in --new_models
    result = knative.send(event)
    assert [s for _, s in knative.attempts] == [422]  # final: no retry can make the model exist
    assert result["outcome"] == "dead_letter" and result["dls_status"] == 202
    (kept,) = [e for e in dead_letters(trigger.home) if e["id"] == event["id"]]
    assert kept["knativeerrorcode"] == "422"
    assert "has no registered version" in json.loads(base64.b64decode(kept["knativeerrordata"]))["error"]
    assert not [
        k for k in LocalStore(trigger.home).list("") if k.split("/")[:2] in (["trigger", "ghost"], ["events", "ghost"])
    ]


def test_an_unreachable_trigger_is_retried_then_dead_lettered(trigger):
    knative = KnativeDelivery(f"http://127.0.0.1:{free_port()}/", manifest_delivery(), trigger.url + "/v1/dead-letters")
    result = knative.send(drift(0, model="unreachable"))
    assert [s for _, s in knative.attempts] == [None] * (manifest_delivery()["retry"] + 1)
    assert result["outcome"] == "dead_letter" and result["event"]["knativeerrorcode"] == "500"
