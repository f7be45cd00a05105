"""CloudEvents 1.0 for the loop: building, parsing and sending the events kfloop emits.

An event is a plain dict in CloudEvents *structured* shape: the attributes ``specversion``,
``id``, ``source``, ``type``, ``time`` (RFC 3339, UTC), ``datacontenttype``, optional
``subject`` and extensions, and ``data`` (a JSON object for kfloop's own events).
``parse_event`` accepts both HTTP modes (binary: ``ce-*`` headers with the data as body;
structured: ``application/cloudevents+json``) and returns that same dict shape; it is
interoperable with the ``cloudevents`` SDK both ways. Durable delivery lives in
``kfloop.events.outbox.Outbox``. The event types are defined in ``kfloop.names``.
"""

from __future__ import annotations

import base64
import json
import uuid
from collections.abc import Mapping
from urllib.parse import unquote

from kfloop import timestamps
from kfloop.errors import InvalidRequest, KfloopError
from kfloop.names import MAX_JSON_DEPTH, validate_event_id

SPECVERSION = "1.0"
STRUCTURED_TYPE = "application/cloudevents+json"
BATCH_TYPE = "application/cloudevents-batch+json"
JSON_TYPE = "application/json"
REQUIRED = ("specversion", "id", "source", "type")


class DeliveryError(KfloopError):
    """A sink did not accept an event. ``status`` is the HTTP status, or None when the
    sink could not be reached; ``permanent`` is True for a 4xx other than 408/429
    (sending the same event again cannot succeed)."""

    def __init__(self, url: str, status: int | None, detail: str):
        self.url, self.status = url, status
        self.permanent = status is not None and 400 <= status < 500 and status not in (408, 429)
        super().__init__(f"event sink {url} did not accept the event: {detail}")


def make_event(type: str, source: str, data: dict, subject: str | None = None, id: str | None = None) -> dict:
    """A CloudEvents 1.0 event in structured (JSON) shape; ``id`` defaults to a new uuid4."""
    event = {
        "specversion": SPECVERSION,
        "id": id or str(uuid.uuid4()),
        "source": source,
        "type": type,
        "time": timestamps.rfc3339(),
        "datacontenttype": JSON_TYPE,
        "data": data,
    }
    if subject is not None:
        event["subject"] = subject
    return validate_event(event)


def validate_event(event: Mapping) -> dict:
    """Check the required attributes; returns the event as a dict or raises InvalidRequest."""
    if not isinstance(event, Mapping):
        raise InvalidRequest(f"a CloudEvent must be a JSON object, got {type(event).__name__}")
    if event.get("specversion") != SPECVERSION:
        raise InvalidRequest(f"unsupported CloudEvents specversion {event.get('specversion')!r}: expected '1.0'")
    for name in REQUIRED[1:]:
        value = event.get(name)
        if not isinstance(value, str) or not value:
            raise InvalidRequest(f"CloudEvent attribute {name!r} is {value!r}: expected a non-empty string")
    if "time" in event:
        _check_time(event["time"])
    return dict(event)


def parse_event(headers: Mapping[str, str], body: bytes) -> dict:
    """An event received over HTTP, in binary or structured mode, as a validated dict.

    Binary mode is chosen when a ``ce-specversion`` header is present, otherwise the body
    must be a structured event. JSON data is decoded, ``text/*`` data becomes a str, any
    other data (and ``data_base64``) stays bytes. Raises InvalidRequest on malformed input.
    """
    lowered = {k.lower(): v for k, v in headers.items()}
    media = lowered.get("content-type", "").split(";")[0].strip().lower()
    if media == BATCH_TYPE:
        raise InvalidRequest(f"batched CloudEvents ({BATCH_TYPE}) are not supported: send one event per request")
    event = _parse_binary(lowered, media, body) if "ce-specversion" in lowered else _parse_structured(body, media)
    validate_event_id(event["id"])  # the id becomes part of keys and run names: kfloop.names bounds it
    return event


def _parse_binary(headers: dict[str, str], media: str, body: bytes) -> dict:
    event: dict = {k[3:]: unquote(v) for k, v in headers.items() if k.startswith("ce-")}
    event.pop("data", None)  # data never comes from a header
    if media:
        event["datacontenttype"] = headers["content-type"]
    event = validate_event(event)
    if body:
        event["data"] = _decode_data(body, media, event["id"])
    return event


def parse_json(body: bytes, what: str, max_depth: int = MAX_JSON_DEPTH) -> object:
    """``body`` parsed as JSON, nested at most ``max_depth`` levels (objects and lists); InvalidRequest
    naming ``what`` otherwise. (Python's parser raises RecursionError on deep nesting, and what it does
    parse would be stored and serialized again: the bound keeps both away.)"""
    try:
        doc = json.loads(body)
    except RecursionError:
        raise InvalidRequest(f"{what} is nested deeper than {max_depth} levels") from None
    except (ValueError, UnicodeDecodeError) as e:
        raise InvalidRequest(f"{what} is not valid JSON: {e}") from None
    if json_depth(doc) > max_depth:
        raise InvalidRequest(f"{what} is nested deeper than {max_depth} levels")
    return doc


def json_depth(doc: object) -> int:
    """How deep objects and lists nest in a parsed JSON value (a scalar is 0), without recursion."""
    deepest, stack = 0, [(doc, 1)]
    while stack:
        value, depth = stack.pop()
        children = value.values() if isinstance(value, dict) else value if isinstance(value, list) else None
        if children is not None:
            deepest = max(deepest, depth)
            stack.extend((child, depth + 1) for child in children if isinstance(child, (dict, list)))
    return deepest


def _parse_structured(body: bytes, media: str) -> dict:
    event = parse_json(body, f"structured CloudEvent (content-type {media or 'none'!r})")
    if isinstance(event, dict) and "specversion" not in event:
        raise InvalidRequest(
            f"not a CloudEvent: no ce-specversion header and no 'specversion' in the body "
            f"(content-type {media or 'none'!r}, expected {STRUCTURED_TYPE!r} or binary mode)"
        )
    event = validate_event(event)
    if "data_base64" in event:
        try:
            event["data"] = base64.b64decode(event.pop("data_base64"), validate=True)
        except (ValueError, TypeError) as e:
            raise InvalidRequest(f"CloudEvent {event['id']!r}: data_base64 is not valid base64: {e}") from None
    return event


def _decode_data(body: bytes, media: str, event_id: str) -> object:
    if not media or media == JSON_TYPE or media.endswith("+json") or media == "text/json":
        return parse_json(body, f"CloudEvent {event_id!r}: data (content-type {media or 'none'!r})")
    if media.startswith("text/"):
        try:
            return body.decode()
        except UnicodeDecodeError as e:
            raise InvalidRequest(f"CloudEvent {event_id!r}: {media} data is not UTF-8: {e}") from None
    return body


def _check_time(value: object) -> None:
    try:
        timestamps.parse_time(value)
    except ValueError:
        raise InvalidRequest(f"CloudEvent attribute 'time' is {value!r}: expected an RFC 3339 timestamp") from None


def to_structured(event: Mapping) -> tuple[dict[str, str], bytes]:
    """HTTP headers and body that carry ``event`` in structured mode."""
    body = dict(event)
    if isinstance(body.get("data"), (bytes, bytearray)):
        body["data_base64"] = base64.b64encode(body.pop("data")).decode()
    return {"content-type": f"{STRUCTURED_TYPE}; charset=utf-8"}, json.dumps(body, default=str).encode()


def post_event(
    url: str, event: Mapping | bytes, timeout: float = 2.0, client=None, headers: Mapping[str, str] | None = None
) -> int:
    """POST one event in structured mode; returns the 2xx status or raises DeliveryError.

    ``event`` is an event dict, or bytes already in structured form (``to_structured``'s
    body, as the outbox stores them). ``client`` is an optional ``httpx.Client`` to reuse
    connections; ``headers`` are sent too (a sink's bearer token).
    """
    import httpx

    extra = dict(headers or {})
    if isinstance(event, (bytes, bytearray)):
        headers, body = {"content-type": f"{STRUCTURED_TYPE}; charset=utf-8"}, bytes(event)
    else:
        headers, body = to_structured(event)
    headers = {**headers, **extra}
    try:
        if client is None:
            response = httpx.post(url, content=body, headers=headers, timeout=timeout)
        else:
            response = client.post(url, content=body, headers=headers, timeout=timeout)
    except httpx.HTTPError as e:
        raise DeliveryError(url, None, f"cannot reach it ({e.__class__.__name__}: {e})") from e
    if not 200 <= response.status_code < 300:
        raise DeliveryError(url, response.status_code, f"HTTP {response.status_code} {response.text[:200]!r}")
    return response.status_code
