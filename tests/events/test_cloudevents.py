"""CloudEvents: building, parsing both HTTP modes, rejecting malformed input, SDK interop."""

from __future__ import annotations

import datetime as dt
import json
import uuid

import pytest
from cloudevents.conversion import to_binary as sdk_to_binary
from cloudevents.conversion import to_structured as sdk_to_structured
from cloudevents.http import CloudEvent, from_http

from kfloop import names
from kfloop.errors import InvalidRequest
from kfloop.events.cloudevents import make_event, parse_event, to_structured

DRIFT_DATA = {"model": "churn", "version": "3", "data": {"is_drift": 1, "p_val": [0.001, 0.4], "threshold": 0.05}}


def test_make_event_has_cloudevents_attributes():
    event = make_event(names.DRIFT_DETECTED, "/kfloop/churn/drift", DRIFT_DATA, subject="churn")
    assert event["specversion"] == "1.0"
    assert uuid.UUID(event["id"]).version == 4
    assert event["type"] == "io.kfloop.drift.detected"
    assert event["source"] == "/kfloop/churn/drift"
    assert event["subject"] == "churn"
    assert event["datacontenttype"] == "application/json"
    assert event["data"] == DRIFT_DATA
    when = dt.datetime.fromisoformat(event["time"].replace("Z", "+00:00"))
    assert when.utcoffset() == dt.timedelta(0)
    assert abs((dt.datetime.now(dt.timezone.utc) - when).total_seconds()) < 5


def test_make_event_ids_are_unique_unless_given():
    assert make_event(names.FEEDBACK, "s", {})["id"] != make_event(names.FEEDBACK, "s", {})["id"]
    assert make_event(names.FEEDBACK, "s", {}, id="fixed-1")["id"] == "fixed-1"
    assert "subject" not in make_event(names.FEEDBACK, "s", {})


def test_event_types_are_distinct_and_namespaced():
    types = [
        names.DRIFT_DETECTED,
        names.QUALITY_DEGRADED,
        names.FEEDBACK,
        names.RETRAIN_STARTED,
        names.RETRAIN_FINISHED,
        names.ROLLOUT_DECISION,
    ]
    assert len(set(types)) == len(types)
    assert all(t.startswith("io.kfloop.") for t in types)


def test_structured_round_trip():
    event = make_event(names.ROLLOUT_DECISION, "/kfloop/rollout", {"decision": "promote", "weight": 100})
    headers, body = to_structured(event)
    assert headers["content-type"].startswith("application/cloudevents+json")
    assert parse_event(headers, body) == event


def test_binary_mode_is_parsed():
    headers = {
        "Ce-Specversion": "1.0",
        "Ce-Id": "abc-1",
        "Ce-Source": "/feedback",
        "Ce-Type": names.FEEDBACK,
        "Ce-Subject": "churn",
        "Ce-Time": "2024-05-01T12:00:00Z",
        "Ce-Partitionkey": "churn%2F3",
        "Content-Type": "application/json; charset=utf-8",
    }
    event = parse_event(headers, json.dumps({"request_id": "r1", "label": 1}).encode())
    assert event["id"] == "abc-1" and event["type"] == names.FEEDBACK and event["subject"] == "churn"
    assert event["data"] == {"request_id": "r1", "label": 1}
    assert event["datacontenttype"] == "application/json; charset=utf-8"
    assert event["partitionkey"] == "churn/3"  # header values are percent-decoded


def test_binary_mode_text_and_empty_data():
    base = {"ce-specversion": "1.0", "ce-id": "1", "ce-source": "s", "ce-type": "t"}
    assert parse_event({**base, "content-type": "text/plain"}, b"hello")["data"] == "hello"
    assert parse_event({**base, "content-type": "application/octet-stream"}, b"\x00\x01")["data"] == b"\x00\x01"
    assert "data" not in parse_event(base, b"")


@pytest.mark.parametrize(
    "headers, body, message",
    [
        (
            {"content-type": "application/cloudevents+json"},
            b'{"specversion": "1.0", "source": "s", "type": "t"}',
            "'id'",
        ),
        (
            {"content-type": "application/cloudevents+json"},
            b'{"specversion": "1.0", "id": "", "source": "s", "type": "t"}',
            "'id'",
        ),
        (
            {"content-type": "application/cloudevents+json"},
            b'{"specversion": "1.0", "id": "1", "type": "t"}',
            "'source'",
        ),
        (
            {"content-type": "application/cloudevents+json"},
            b'{"specversion": "1.0", "id": "1", "source": "s"}',
            "'type'",
        ),
        (
            {"content-type": "application/cloudevents+json"},
            b'{"specversion": "0.3", "id": "1", "source": "s", "type": "t"}',
            "specversion",
        ),
        ({"content-type": "application/cloudevents+json"}, b'{"specversion": "1.0", "id": ', "not valid JSON"),
        ({"content-type": "application/cloudevents+json"}, b"[1, 2]", "JSON object"),
        (
            {"content-type": "application/cloudevents+json"},
            b'{"specversion": "1.0", "id": "1", "source": "s", "type": "t", "time": "yesterday"}',
            "RFC 3339",
        ),
        ({"content-type": "application/json"}, b'{"instances": [[1, 2]]}', "not a CloudEvent"),
        ({}, b"", "not valid JSON"),
        ({"ce-specversion": "1.0", "ce-source": "s", "ce-type": "t"}, b"{}", "'id'"),
        ({"ce-specversion": "2.0", "ce-id": "1", "ce-source": "s", "ce-type": "t"}, b"{}", "specversion"),
        (
            {
                "ce-specversion": "1.0",
                "ce-id": "1",
                "ce-source": "s",
                "ce-type": "t",
                "content-type": "application/json",
            },
            b"{oops",
            "not valid JSON",
        ),
        ({"content-type": "application/cloudevents-batch+json"}, b"[]", "batched"),
    ],
)
def test_malformed_events_are_rejected(headers, body, message):
    with pytest.raises(InvalidRequest, match=message):
        parse_event(headers, body)


def test_sdk_parses_what_we_send():
    event = make_event(names.DRIFT_DETECTED, "/kfloop/churn", DRIFT_DATA, subject="churn")
    parsed = from_http(*to_structured(event))
    assert parsed["id"] == event["id"] and parsed["type"] == event["type"] and parsed["source"] == event["source"]
    assert parsed["subject"] == "churn" and parsed["specversion"] == "1.0"
    assert parsed.data == DRIFT_DATA


@pytest.mark.parametrize("convert", [sdk_to_binary, sdk_to_structured], ids=["binary", "structured"])
def test_we_parse_what_the_sdk_sends(convert):
    sdk_event = CloudEvent(
        {"type": names.FEEDBACK, "source": "/labels", "subject": "churn", "myext": "x"},
        {"request_id": "r9", "label": 0},
    )
    headers, body = convert(sdk_event)
    event = parse_event(headers, body)
    assert event["id"] == sdk_event["id"] and event["type"] == names.FEEDBACK and event["source"] == "/labels"
    assert event["subject"] == "churn" and event["myext"] == "x"
    assert event["data"] == {"request_id": "r9", "label": 0}


def test_we_parse_sdk_binary_data_in_structured_mode():
    sdk_event = CloudEvent({"type": "t", "source": "s", "datacontenttype": "application/octet-stream"}, b"\x00\xff")
    assert parse_event(*sdk_to_structured(sdk_event))["data"] == b"\x00\xff"
    assert (
        from_http(
            *to_structured(
                {**make_event("t", "s", {}), "data": b"\x00\xff", "datacontenttype": "application/octet-stream"}
            )
        ).data
        == b"\x00\xff"
    )


def test_json_nested_up_to_the_limit_is_parsed_and_one_level_more_is_refused():
    from kfloop.events.cloudevents import json_depth, parse_json
    from kfloop.names import MAX_JSON_DEPTH

    at_limit = b'{"a": ' * (MAX_JSON_DEPTH - 1) + b"[1]" + b"}" * (MAX_JSON_DEPTH - 1)
    assert json_depth(parse_json(at_limit, "body")) == MAX_JSON_DEPTH
    assert json_depth(1) == 0 and json_depth([]) == 1 and json_depth({"a": [1, {"b": []}]}) == 4
    for body in (b"[" + at_limit + b"]", b"[" * 200_000):
        with pytest.raises(InvalidRequest, match=f"body is nested deeper than {MAX_JSON_DEPTH} levels|not valid JSON"):
            parse_json(body, "body")
    with pytest.raises(InvalidRequest, match=f"nested deeper than {MAX_JSON_DEPTH}"):
        parse_json(b"[" * 200_000 + b"]" * 200_000, "body")
