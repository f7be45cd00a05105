"""Ground truth: labels for served predictions, stored next to the captures and joined with them.

A label names a captured row by its request id (the capture record's ``request_id``, ``<id>:<i>``
for row ``i`` of a request; the bare ``<id>`` is accepted for a one-row request) and carries the
true value, and optionally the RFC 3339 ``time`` it became known (default: when it was received)::

    {"request_id": "9f0c...:0", "label": 1, "time": "2024-05-02T08:00:00Z"}

``FeedbackStore.add`` checks a whole batch first and stores all of it or nothing, as one object
``feedback/<model>/<YYYY-MM-DD>/<received>-<uid>-<sha256>.jsonl`` (JSON Lines named by the SHA-256
of its bytes, like captures). Stored records are ``{"request_id", "label", "time", "received"}``;
classification labels are stored as the class name (``schema.classes``), regression labels as
floats. Relabeling is allowed: the label received last wins (received order, not ``time``).

``labeled_frame`` joins the labels with the captures: one row per labeled captured row.
"""

from __future__ import annotations

import collections
import datetime as dt
import math
import re
import threading
import uuid

import pandas as pd

from kfloop import timestamps
from kfloop.errors import InvalidRequest
from kfloop.monitoring.capture import read_captures
from kfloop.monitoring.capture_format import CaptureKey, decode, encode, parse_key
from kfloop.names import MAX_FEEDBACK_LABELS, captures_prefix, feedback_prefix, key_segment
from kfloop.schema import FeatureSchema, label_key
from kfloop.store.objects import ObjectStore, sha256_bytes

META_COLUMNS = ("prediction", "model", "model_version", "revision", "time", "label_time")
SHOWN = 5  # bad ids or values named in an error message
_NAME = re.compile(r"^.+-(?P<digest>[0-9a-f]{64})\.jsonl$")


class FeedbackStore:
    """Validates and stores label batches for the models whose captures live in ``store``.

    The request ids each model has captured are indexed in memory; the index reads only capture
    objects it has not read before (objects are immutable), and only when a label names an id it
    does not know yet.
    """

    def __init__(self, store: ObjectStore):
        self.store = store
        self._indexes: dict[str, _CaptureIndex] = {}
        self._lock = threading.Lock()

    def add(self, model: str, schema: FeatureSchema, labels: list[dict]) -> dict:
        """Store ``labels`` for ``model`` and return ``{"accepted": n}``; InvalidRequest (nothing
        stored) when any label is malformed, has a value of the wrong type or names an unknown id."""
        if not isinstance(model, str) or not model or key_segment(model) != model:
            raise InvalidRequest(f"model name {model!r} is not valid: use letters, digits, '.', '_', '-'")
        records = [_checked(schema, label, i) for i, label in enumerate(_label_list(labels))]
        with self._lock:
            index = self._indexes.setdefault(model, _CaptureIndex())
            resolved = index.resolve(self.store, model, [r["request_id"] for r in records])
        for record, request_id in zip(records, resolved):
            record["request_id"] = request_id
        received = timestamps.now()
        for record in records:
            record["received"] = timestamps.rfc3339(received)
        data = encode(records, "jsonl")
        self.store.put(
            f"{feedback_prefix(model)}{timestamps.day(received)}/{timestamps.key_stamp(received)}-"
            f"{uuid.uuid4().hex[:12]}-{sha256_bytes(data)}.jsonl",
            data,
        )
        return {"accepted": len(records)}


class _CaptureIndex:
    """The request ids of one model's captures, and how many rows each base id ``<id>`` had."""

    def __init__(self):
        self.keys: set[str] = set()
        self.ids: set[str] = set()
        self.rows: collections.Counter = collections.Counter()

    def resolve(self, store: ObjectStore, model: str, request_ids: list[str]) -> list[str]:
        """The captured row id of each label's id; InvalidRequest naming the unknown ones."""
        resolved = [self._lookup(r) for r in request_ids]
        if any(r is None for r in resolved):
            self._refresh(store, model)
            resolved = [self._lookup(r) for r in request_ids]
        unknown = [given for given, found in zip(request_ids, resolved) if found is None]
        if unknown:
            raise InvalidRequest(
                f"{len(unknown)} of {len(request_ids)} labels name request ids that model "
                f"{model!r} has not captured: {unknown[:SHOWN]} (use the x-request-id of the "
                f"prediction, '<id>:<row>' for a request with several rows); nothing was stored"
            )
        return resolved  # type: ignore[return-value]

    def _lookup(self, request_id: str) -> str | None:
        if request_id in self.ids:
            return request_id
        return f"{request_id}:0" if self.rows.get(request_id) == 1 else None

    def _refresh(self, store: ObjectStore, model: str) -> None:
        for key in store.list(captures_prefix(model)):
            if key in self.keys:
                continue
            parsed = parse_key(key)
            for record in decode(store.get(key), parsed, store.uri(key)) if parsed else []:
                request_id = str(record.get("request_id"))
                if request_id not in self.ids:
                    self.ids.add(request_id)
                    base, sep, row = request_id.rpartition(":")
                    if sep and row.isdigit():
                        self.rows[base] += 1
            self.keys.add(key)


def _label_list(labels: object) -> list:
    if not isinstance(labels, list) or not labels:
        raise InvalidRequest(f"expected a non-empty list of labels, got {_shown(labels)}")
    if len(labels) > MAX_FEEDBACK_LABELS:
        raise InvalidRequest(
            f"the batch has {len(labels)} labels, over the limit of {MAX_FEEDBACK_LABELS}: send it in smaller batches"
        )
    return labels


def _checked(schema: FeatureSchema, label: object, i: int) -> dict:
    """One label as a record to store; InvalidRequest naming the label's position and value."""
    if not isinstance(label, dict):
        raise InvalidRequest(f"label {i}: expected an object with request_id and label, got {_shown(label)}")
    request_id = label.get("request_id")
    if not isinstance(request_id, str) or not request_id:
        raise InvalidRequest(f"label {i}: request_id must be a non-empty string, got {_shown(request_id)}")
    if "label" not in label:
        raise InvalidRequest(f"label {i} (request {request_id!r}) has no 'label' field")
    return {
        "request_id": request_id,
        "label": _label_value(schema, label["label"], request_id),
        "time": _label_time(label.get("time"), request_id),
    }


def _label_value(schema: FeatureSchema, value: object, request_id: str) -> str | float:
    number = isinstance(value, (int, float)) and not isinstance(value, bool)
    if schema.task == "regression":
        if not number or not math.isfinite(value):  # type: ignore[arg-type]
            raise InvalidRequest(
                f"label of request {request_id!r} is {_shown(value)}: "
                f"expected a finite number for the regression target {schema.target!r}"
            )
        return float(value)  # type: ignore[arg-type]
    if (number or isinstance(value, str)) and label_key(value) in schema.classes:
        return label_key(value)
    raise InvalidRequest(
        f"label of request {request_id!r} is {_shown(value)}: expected one of the classes "
        f"{list(schema.classes)} of {schema.target!r}"
    )


def _label_time(value: object, request_id: str) -> str:
    if value is None:
        return timestamps.rfc3339()
    try:
        when = timestamps.parse_time(value)
    except ValueError:
        when = None
    if when is None:
        raise InvalidRequest(
            f"time of the label of request {request_id!r} is {_shown(value)}: "
            f"expected an RFC 3339 timestamp such as 2024-05-01T12:00:00Z"
        )
    return timestamps.rfc3339(when)


def _shown(value: object) -> str:
    text = repr(value)
    return f"{type(value).__name__} {text[:80]}{'...' if len(text) > 80 else ''}"


def read_labels(store: ObjectStore, model: str) -> dict[str, dict]:
    """The latest label record per captured row id of ``model`` (checksums verified)."""
    latest: dict[str, dict] = {}
    for key in store.list(feedback_prefix(model)):
        match = _NAME.match(key.rsplit("/", 1)[-1])
        if match is None:
            continue
        for record in decode(store.get(key), CaptureKey(model, "", "", match["digest"], "jsonl"), store.uri(key)):
            latest[record["request_id"]] = record
    return latest


def labeled_frame(
    store: ObjectStore,
    model: str,
    schema: FeatureSchema,
    version: str | None = None,
    since: dt.datetime | dt.date | str | None = None,
) -> pd.DataFrame:
    """Captured rows of ``model`` that have a label, one row each (the latest capture of an id wins).

    Columns: ``request_id``, the feature values as captured (schema order), the label in
    ``schema.target`` (class name or float), then ``prediction``, ``model``, ``model_version``,
    ``revision``, ``time`` (prediction time) and ``label_time`` (both UTC timestamps), ordered by
    ``time``. ``version`` and ``since`` (on the prediction time) filter the captures.
    """
    labels = read_labels(store, model)
    captures = read_captures(store, model, version, since)
    captured = {r["request_id"]: r for r in captures if r.get("request_id") in labels}
    rows = [_joined(schema, record, labels[request_id]) for request_id, record in captured.items()]
    columns = ["request_id", *schema.names, schema.target, *META_COLUMNS]
    frame = pd.DataFrame(rows, columns=columns)
    for column in ("time", "label_time"):
        frame[column] = pd.to_datetime(frame[column], utc=True, format="ISO8601")
    return frame.sort_values(["time", "request_id"], kind="stable", ignore_index=True)


def _joined(schema: FeatureSchema, capture: dict, label: dict) -> dict:
    features = capture.get("features") or {}
    row = {"request_id": capture["request_id"], **{name: features.get(name) for name in schema.names}}
    row[schema.target] = label["label"]
    row.update({column: capture.get(column) for column in META_COLUMNS[:-1]})
    row["label_time"] = label.get("time")
    return row
