"""The trigger service as a real process against hostile names and unauthenticated callers: event ids,
model names and feedback that try to leave KFLOOP_HOME get a 4xx and write nothing outside it; the
feedback and status routes want the control token, refuse foreign origins and non-JSON bodies, and the
CloudEvents route ``/`` stays open (the transformers and the broker post there)."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import httpx
import pytest

from kfloop.events.cloudevents import make_event, to_structured
from kfloop.names import CONTROL_TOKEN_FILE, DECISION_HEADER, DRIFT_DETECTED, RETRAIN_FINISHED
from tests.conftest import wait_for
from tests.fakes.event_sink import EventSink
from tests.serving.trigger_process import Trigger, kill_fake_runs

pytestmark = pytest.mark.processes  # starts the trigger service on 127.0.0.1

HOSTILE_IDS = {
    "traversal": "x/../../../../outside/F",
    "dots": "..",
    "absolute": "/tmp/kfloop-test-outside/F",
    "backslashes": "..\\..\\outside\\F",
    "nul": "a\x00b",
    "100 KB": "a" * 100_000,
    "newline": "a\nb",
}


def drift_body(event_id: str, model: str = "churn") -> tuple[dict, bytes]:
    data = {"data": {"is_drift": 1, "window_index": 0}, "model": model, "model_version": "1"}
    event = make_event(DRIFT_DETECTED, "kfloop/test", data, subject=model)
    event["id"] = event_id  # after make_event, which would refuse it
    return to_structured(event)


def files_outside(root: Path, home: Path) -> set[Path]:
    return {p for p in root.rglob("*") if p.is_file() and home not in p.parents}


@pytest.fixture
def trigger(tmp_path):
    sink = EventSink()
    t = Trigger(tmp_path, sink, "--consecutive_windows", "1", "--max_body_bytes", "1000000")
    yield t
    code = t.stop()
    kill_fake_runs(t.home)
    sink.close()
    assert code == 0, t.output()


def test_hostile_event_ids_and_model_names_are_refused_and_write_nothing_outside_home(trigger, tmp_path):
    before = files_outside(tmp_path, trigger.home)
    answers = {}
    for kind, event_id in HOSTILE_IDS.items():
        headers, body = drift_body(event_id)
        answers[kind] = httpx.post(trigger.url + "/", content=body, headers=headers, timeout=30)
    for model in ("../../outside", "..", "/abs", "a\x00b", "m" * 100_000):
        headers, body = drift_body("ok-id", model=model)
        answers[f"model {model[:10]!r}"] = httpx.post(trigger.url + "/", content=body, headers=headers, timeout=30)
    binary = {"ce-specversion": "1.0", "ce-id": "..", "ce-source": "s", "ce-type": DRIFT_DETECTED}
    answers["binary .."] = httpx.post(trigger.url + "/", json={"model": "churn"}, headers=binary, timeout=30)
    for kind, response in answers.items():
        assert 400 <= response.status_code < 500, (kind, response.status_code, response.text[:300])
        assert "error" in response.json(), kind
    assert "the limit is 256 bytes" in answers["100 KB"].json()["error"]
    assert "without '/'" in answers["traversal"].json()["error"]
    feedback = trigger.feedback({"model": "../../outside", "labels": [{"request_id": "x:0", "label": 1}]})
    assert 400 <= feedback.status_code < 500
    status = httpx.get(trigger.url + "/v1/status", params={"model": "../../x"}, headers=trigger.auth, timeout=10)
    assert status.status_code < 500
    assert trigger.runs() == []  # no run started on any of them
    assert files_outside(tmp_path, trigger.home) == before
    assert not Path("/tmp/kfloop-test-outside").exists()
    stored = [p.name for p in trigger.home.rglob("*") if p.is_file()]
    assert all(len(name) < 200 for name in stored), stored
    # and a well-formed event still works after all that
    headers, body = drift_body("0b6f2c1e-7a43-4c2d-9a7e-2f1d8c3b5a60")
    answer = httpx.post(trigger.url + "/", content=body, headers=headers, timeout=30)
    assert answer.status_code == 202 and answer.headers[DECISION_HEADER] == "start"  # Knative's reply: empty


def test_bytes_that_are_not_http_get_a_json_400(trigger):
    """A TLS hello or junk on the trigger's port: a JSON 400 (``kfloop.serving.http_protocol``), not
    uvicorn's plain text."""
    import json
    import socket

    with socket.create_connection(("127.0.0.1", trigger.port), timeout=5) as s:
        s.sendall(b"\x16\x03\x01\x02\x00 hello, not http\r\n\r\n")
        answer = b""
        while chunk := s.recv(65536):
            answer += chunk
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 400 ") and b"content-type: application/json" in head
    assert json.loads(body)["error"].endswith("not an HTTP/1.1 request")


def test_feedback_and_status_want_the_token_and_the_event_route_stays_open(trigger):
    token_file = trigger.home / CONTROL_TOKEN_FILE
    assert stat.S_IMODE(os.stat(token_file).st_mode) == 0o600
    feedback, status = trigger.url + "/v1/feedback", trigger.url + "/v1/status"
    body = {"model": "churn", "labels": [{"request_id": "x:0", "label": 1}]}
    refused = {
        "no token": httpx.post(feedback, json=body),
        "wrong token": httpx.post(feedback, json=body, headers={"authorization": "Bearer nope"}),
        "basic auth": httpx.post(feedback, json=body, auth=("a", "b")),
        "status, no token": httpx.get(status),
    }
    for kind, response in refused.items():
        assert response.status_code == 401, kind
        assert "bearer token" in response.json()["error"] and response.headers["www-authenticate"].startswith("Bearer")
    foreign = httpx.post(feedback, json=body, headers={**trigger.auth, "origin": "http://evil.example"})
    assert foreign.status_code == 403 and "evil.example" in foreign.json()["error"]
    plain = httpx.post(feedback, content=b'{"model": "churn"}', headers={**trigger.auth, "content-type": "text/plain"})
    assert plain.status_code == 415 and "text/plain" in plain.json()["error"]
    same_origin = httpx.get(status, headers={**trigger.auth, "origin": trigger.url})
    assert same_origin.status_code == 200 and same_origin.json()["models"] == {}
    assert trigger.runs() == [] and not (trigger.home / "feedback").exists()
    # the CloudEvents route takes events without a token, and health and metrics stay open
    headers, event = drift_body("5d0c7a52-93d2-4a3e-a1d6-07f2b4c6e111", model="nomodel")
    assert httpx.post(trigger.url + "/", content=event, headers=headers).status_code != 401
    assert httpx.get(trigger.url + "/healthz").status_code == 200
    assert httpx.get(trigger.url + "/metrics").status_code == 200


def test_events_and_feedback_naming_an_unknown_model_are_refused_and_store_nothing(tmp_path):
    from kfloop.names import FEEDBACK, QUALITY_DEGRADED
    from kfloop.store.objects import LocalStore
    from kfloop.store.registry import Registry
    from tests.fakes.bundles import make_bundle

    home = tmp_path / "home"
    Registry(LocalStore(home)).register("churn", make_bundle(tmp_path / "bundle", 0.8))
    sink = EventSink()
    trigger = Trigger(tmp_path, sink, "--consecutive_windows", "1", new_models=())
    try:
        store = LocalStore(home)
        before = store.list("")
        labels = [{"request_id": "x:0", "label": 1}]
        events = [
            make_event(DRIFT_DETECTED, "kfloop/t", {"data": {"is_drift": 1}, "model": "ghost"}, subject="ghost"),
            make_event(QUALITY_DEGRADED, "kfloop/t", {"model": "ghost"}, subject="ghost"),
            make_event(FEEDBACK, "kfloop/t", {"model": "ghost", "labels": labels}, subject="ghost"),
        ]
        answers = [
            trigger.post(e, binary=binary, accept=accept)
            for e in events
            for binary in (True, False)
            for accept in (None, "application/json")
        ]
        assert {r.status_code for r in answers} == {422}, [r.text for r in answers]
        assert all("'ghost' has no registered version" in r.json()["error"] for r in answers)
        feedback = trigger.feedback({"model": "ghost", "labels": labels})
        assert feedback.status_code == 404 and "has no registered version" in feedback.json()["error"]
        assert trigger.status()["models"] == {} and trigger.status("ghost")["processed_events"] == 0
        assert store.list("") == before  # nothing written: no trigger state, no event log, no feedback
        assert trigger.runs() == []
        # the registered model is served as before
        known = trigger.post(events[0] | {"subject": "churn", "data": {"data": {"is_drift": 1}, "model": "churn"}})
        assert known.status_code == 200 and known.json()["action"] == "start"
        assert any(k.startswith("trigger/churn/") for k in store.list("")) and not store.list("trigger/ghost/")
    finally:
        code = trigger.stop()
        kill_fake_runs(trigger.home)
        sink.close()
    assert code == 0, trigger.output()


@pytest.mark.parametrize("sink_auth", [True, False])
def test_emitted_events_carry_the_token_only_with_sink_auth(tmp_path, sink_auth):
    sink = EventSink()
    flags = ["--consecutive_windows", "1", "--original_source", "sample:churn?n_rows=200"]
    trigger = Trigger(tmp_path, sink, *flags, *(["--sink_auth"] if sink_auth else []))
    try:
        headers, body = drift_body("3f1d2c4b-0000-4000-8000-00000000000a")
        answer = httpx.post(trigger.url + "/", content=body, headers=headers, timeout=30)
        assert answer.headers[DECISION_HEADER] == "start"
        wait_for(lambda: sink.of_type(RETRAIN_FINISHED), 20, "retrain.finished")
        expected = trigger.auth["authorization"] if sink_auth else None
        assert sink.authorizations and set(sink.authorizations) == {expected}
    finally:
        code = trigger.stop()
        kill_fake_runs(trigger.home)
        sink.close()
    assert code == 0, trigger.output()
