"""Mirrored (shadow) traffic on a cluster: the mirror state a rollout writes, the shadow records a
transformer writes, and how an analysis reads them.

KServe has no request mirroring (kserve#2978), but kfloop's drift transformer is on every request's
path, so it mirrors. ``kfloop rollout shadow NAME:VERSION --percent P --target kubernetes`` (and a
``blue-green`` analysis) runs the candidate as its own predictor-only InferenceService
(``names.shadow_isvc_name``: ``{isvc}-shadow``) and writes the **mirror state**, one sealed JSON object
(checksum verified on read) at ``mirror/MODEL/state.json`` (``names.mirror_state_key``)::

    {"model": "churn", "version": 3, "percent": 50, "isvc": "churn-shadow", "namespace": "models",
     "url": "http://churn-shadow-predictor.models.svc.cluster.local", "updated": "2026-01-01T12:00:00Z"}

The transformer reads it every few seconds on a thread of its own (no restart, no new revision);
no state object, or ``percent`` 0, means no mirroring (``--percent 0`` removes the object and the
shadow InferenceService). After answering a client it sends ``percent`` % of the requests, the body
its predictor got and the same ``x-request-id``, to ``url`` (``serving/model_servers/mirror.py``) and
records the candidate's answer as one **shadow record**, the format of ``serving/local/shadow.py``
with the request id::

    {"time": "2026-01-01T12:00:00.123456Z", "model": "churn", "request_id": "req-1",
     "path": "/v1/models/churn:predict", "request": {...},    # null (and "request_bytes") above 64 KiB
     "shadow": {"version": 3, "status": 200, "latency_ms": 2.1, "response": {...}},   # or "error"
     "primary": {"revision": "stable", "version": "1", "status": 200, "response": {...}}}

batched into JSON Lines objects ``shadow/MODEL/VERSION/DAY/STAMP-UID-SHA.jsonl``
(``names.shadow_records_prefix``; SHA is the SHA-256 of the object's bytes, checked by
``decode_records``). A canary analysis reads a shadow side from them (``ShadowRecords``,
``shadow_stats``): requests, errors (no answer, or a 5xx), p99 latency as the transformer measured it
(its call to the candidate, so including the network hop) and the candidate's predictions.
"""

from __future__ import annotations

import dataclasses
import re
import uuid
from collections.abc import Iterable, Sequence
from urllib.parse import urlsplit

import orjson

from kfloop import timestamps
from kfloop.errors import ChecksumError, ConfigError, ObjectNotFound
from kfloop.inference.responses import answer_predictions
from kfloop.names import SHADOW_PREFIX, mirror_state_key, shadow_records_prefix
from kfloop.rollout.stats import MAX_ROWS, quantile
from kfloop.store.objects import ObjectStore, get_json, put_json, sha256_bytes

MAX_RECORDED_REQUEST_BYTES = 64 * 1024  # a larger mirrored request is recorded by its size only
MAX_RECORDED_TEXT = 1000  # characters of an answer that is not JSON
_NAME = re.compile(r"^.+-(?P<digest>[0-9a-f]{64})\.jsonl$")


@dataclasses.dataclass(frozen=True)
class MirrorState:
    """Where a model's transformer mirrors to: ``percent`` of its requests, to version ``version`` at ``url``."""

    model: str
    version: int
    percent: int
    url: str
    isvc: str | None = None
    namespace: str | None = None
    updated: str | None = None

    def __post_init__(self):
        if not isinstance(self.version, int) or isinstance(self.version, bool) or self.version < 1:
            raise ConfigError(f"mirror state of {self.model}: version {self.version!r} is not a version number")
        if not isinstance(self.percent, int) or isinstance(self.percent, bool) or not 0 <= self.percent <= 100:
            raise ConfigError(f"mirror state of {self.model}: percent {self.percent!r} is not 0-100")
        parts = urlsplit(self.url) if isinstance(self.url, str) else None
        if parts is None or parts.scheme not in ("http", "https") or not parts.hostname or parts.path not in ("", "/"):
            raise ConfigError(f"mirror state of {self.model}: url {self.url!r} is not http(s)://host[:port]")

    @classmethod
    def from_dict(cls, doc: dict) -> MirrorState:
        fields = {f.name for f in dataclasses.fields(cls)}
        try:
            return cls(**{k: v for k, v in doc.items() if k in fields})
        except TypeError as e:
            raise ConfigError(f"mirror state {doc!r} lacks a field: {e}") from None

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def write_state(store: ObjectStore, state: MirrorState) -> None:
    put_json(store, mirror_state_key(state.model), {**state.to_dict(), "updated": timestamps.rfc3339()})


def read_state(store: ObjectStore, model: str) -> MirrorState | None:
    """The model's mirror state; None without one. ``ChecksumError``/``ConfigError`` when it is damaged."""
    try:
        doc = get_json(store, mirror_state_key(model))
    except ObjectNotFound:
        return None
    return MirrorState.from_dict(doc)


def clear_state(store: ObjectStore, model: str) -> bool:
    """Remove the model's mirror state (mirroring stops at the transformer's next poll); whether there was one."""
    key = mirror_state_key(model)
    if not store.exists(key):
        return False
    store.delete(key)
    return True


# -- shadow records ------------------------------------------------------------------------------


def as_json(body: bytes | None, limit: int | None = None):
    """A body as JSON when it is JSON, else its text (at most ``MAX_RECORDED_TEXT`` characters)."""
    if body is None or (limit is not None and len(body) > limit):
        return None
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError:
        return body.decode("utf-8", "replace")[:MAX_RECORDED_TEXT]


def shadow_record(
    model: str,
    request_id: str,
    path: str,
    request: bytes,
    shadow: dict,
    primary: dict,
    when: float,
) -> dict:
    """One shadow record (see the module doc) from what the transformer kept: the raw request body,
    ``shadow`` (``version`` and ``status``, ``latency_ms``, ``response`` bytes; or ``error``) and
    ``primary`` (``revision``, ``version``, ``status``, ``response`` bytes)."""
    recorded = as_json(request, MAX_RECORDED_REQUEST_BYTES)
    record = {
        "time": timestamps.rfc3339(when),
        "model": model,
        "request_id": request_id,
        "path": path,
        "request": recorded,
    }
    if recorded is None:
        record["request_bytes"] = len(request)
    record["shadow"] = {**shadow, "response": as_json(shadow["response"])} if "response" in shadow else dict(shadow)
    record["primary"] = {**primary, "response": as_json(primary.get("response"))}
    return record


def encode_records(records: Sequence[dict]) -> bytes:
    return b"".join(orjson.dumps(r, option=orjson.OPT_SERIALIZE_NUMPY) + b"\n" for r in records)


def write_records(store: ObjectStore, model: str, version: int | str, records: Sequence[dict]) -> str:
    """Store ``records`` (of one candidate version) as one object; returns its key."""
    data = encode_records(records)
    day = str(records[0]["time"])[:10] if records else timestamps.rfc3339()[:10]
    name = f"{timestamps.key_stamp()}-{uuid.uuid4().hex[:12]}-{sha256_bytes(data)}.jsonl"
    key = f"{shadow_records_prefix(model, version)}{day}/{name}"
    store.put(key, data)
    return key


def decode_records(data: bytes, key: str) -> list[dict]:
    """The records of a shadow object, its checksum verified (``ChecksumError`` when it does not match)."""
    match = _NAME.match(key.rsplit("/", 1)[-1])
    if match is None or sha256_bytes(data) != match["digest"]:
        raise ChecksumError(f"shadow records {key}: checksum mismatch (content {sha256_bytes(data)})")
    return [orjson.loads(line) for line in data.split(b"\n") if line.strip()]


class ShadowRecords:
    """The shadow records of one model per candidate version since a time; each object (immutable) is
    read and checked once."""

    def __init__(self, store: ObjectStore, model: str, max_rows: int = MAX_ROWS):
        self.store, self.model, self.max_rows = store, model, max_rows
        self._objects: dict[str, list[dict]] = {}

    def records(self, version: int | str, since: str) -> list[dict]:
        """Records of ``version`` with ``time >= since`` (RFC 3339, UTC), oldest first."""
        prefix = shadow_records_prefix(self.model, version)
        first = since[:10]
        out = []
        for key in self.store.list(prefix):
            day = key[len(prefix) :].split("/", 1)[0]
            if day < first or not key.endswith(".jsonl") or not key.startswith(SHADOW_PREFIX + "/"):
                continue
            if key not in self._objects:
                self._objects[key] = decode_records(self.store.get(key), self.store.uri(key))
            out.extend(r for r in self._objects[key] if str(r.get("time", "")) >= since)
        out.sort(key=lambda r: str(r.get("time", "")))
        return out[-self.max_rows :]


@dataclasses.dataclass(frozen=True)
class ShadowStats:
    requests: int
    errors: int
    p99_ms: float | None
    predictions: list


def shadow_stats(records: Iterable[dict]) -> ShadowStats:
    """A shadow side's numbers: every mirrored request counts, one without an answer or answered with
    a 5xx is an error, latency and predictions come from the answered ones."""
    requests = errors = 0
    latencies, predictions = [], []
    for record in records:
        answer = record.get("shadow") or {}
        requests += 1
        status = int(answer.get("status") or 0)
        if "error" in answer or status >= 500 or status == 0:
            errors += 1
            continue
        if "latency_ms" in answer:
            latencies.append(float(answer["latency_ms"]))
        response = answer.get("response")
        if status < 300 and isinstance(response, dict):
            try:
                predictions.extend(answer_predictions(response))
            except (KeyError, TypeError, ValueError, IndexError):
                errors += 1  # a 2xx that is no inference answer: counted like a failure
    return ShadowStats(requests, errors, quantile(latencies, 0.99), predictions)
