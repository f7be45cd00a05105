"""A compact record of every checked drift window, clean or drifted, written in batches.

The drift monitor emits a CloudEvent only for a window that drifted; the report and the scheduled
checks need every window (how often a version was checked, how close the clean ones came). So the
monitor also hands each window's result to a ``WindowLog``, which keeps one *summary* per window::

    {"model": "churn", "model_version": "2", "revision": "stable",
     "window_index": 7, "start": "2026-...Z", "end": "2026-...Z", "rows": 200,
     "is_drift": false, "threshold": 0.00625, "min_p_value": 0.21,
     "p_values": {"age": 0.43, "tenure": 0.21, ...},          # null where the test gave none
     "signals": [SignalResult(...).to_dict(), ...]}           # feature_drift; others append theirs

and writes them, off the request path (on the monitor's thread), as JSON Lines objects
``windows/<model>/<version>/<YYYY-MM-DD>/<time>-<uid>-<sha256>.jsonl`` (``kfloop.names.windows_prefix``):
like captures, the SHA-256 of the bytes is in the name and ``read_windows`` verifies it. A batch is
written when it holds ``batch_size`` summaries, when its oldest summary is ``flush_interval_s`` old
(checked at each ``add`` and ``tick``), and at ``flush``/``close``. A failed write keeps the batch
for the next attempt, up to ``max_buffer`` summaries (older ones are dropped and counted).
"""

from __future__ import annotations

import logging
import re
import threading
import time
import uuid
from collections.abc import Sequence

from kfloop import timestamps
from kfloop.errors import ConfigError
from kfloop.monitoring.capture_format import CaptureKey, decode, encode
from kfloop.monitoring.signals import SignalResult
from kfloop.names import WINDOWS_PREFIX, key_segment, windows_prefix
from kfloop.store.objects import ObjectStore, sha256_bytes

log = logging.getLogger(__name__)

_NAME = re.compile(r"^.+-(?P<digest>[0-9a-f]{64})\.jsonl$")
DEFAULT_BATCH_SIZE = 20
DEFAULT_FLUSH_INTERVAL_S = 2.0
DEFAULT_MAX_BUFFER = 10_000


def window_summary(result: dict, context: dict | None = None, signals: Sequence[SignalResult] = ()) -> dict:
    """The summary of one window's drift result (``WindowedDrift`` output, with the monitor's
    ``window_start``/``window_end`` in its data) and the monitor's context (model, version, revision);
    ``signals``: the other checks' results on the same window (data quality, prediction drift)."""
    data, context = result["data"], context or {}
    p_values = {str(k): _finite(v) for k, v in (data.get("p_val_by_feature") or {}).items()}
    finite = [p for p in p_values.values() if p is not None]
    smallest = min(finite) if finite else None
    threshold = _finite(data.get("threshold"))
    drifted = sorted(k for k, p in p_values.items() if p is not None and threshold is not None and p < threshold)
    signal = SignalResult(
        "feature_drift",
        "alert" if data.get("is_drift") else "ok",
        value=smallest,
        threshold=threshold,
        direction="below",
        rows=int(data.get("window_size") or 0),
        evidence={"features": drifted},
    )
    return {
        "model": context.get("model"),
        "model_version": None if context.get("model_version") is None else str(context["model_version"]),
        "revision": context.get("revision"),
        "window_index": data.get("window_index"),
        "start": data.get("window_start"),
        "end": data.get("window_end"),
        "rows": data.get("window_size"),
        "is_drift": bool(data.get("is_drift")),
        "threshold": threshold,
        "min_p_value": smallest,
        "p_values": p_values,
        "signals": [signal.to_dict(), *(other.to_dict() for other in signals)],
    }


class WindowLog:
    """Buffers window summaries and writes them to ``store`` in checksummed JSON Lines batches.
    Thread-safe: several monitors may share one log."""

    def __init__(
        self,
        store: ObjectStore,
        batch_size: int = DEFAULT_BATCH_SIZE,
        flush_interval_s: float = DEFAULT_FLUSH_INTERVAL_S,
        max_buffer: int = DEFAULT_MAX_BUFFER,
    ):
        if batch_size < 1 or max_buffer < batch_size:
            raise ConfigError(f"window log: batch_size {batch_size} must be >= 1 and <= max_buffer {max_buffer}")
        if not flush_interval_s > 0:
            raise ConfigError(f"window log: flush_interval_s must be positive, got {flush_interval_s}")
        self.store, self.batch_size, self.flush_interval_s, self.max_buffer = (
            store,
            batch_size,
            flush_interval_s,
            max_buffer,
        )
        self.written = self.dropped = self.errors = 0
        self._buffer: list[dict] = []
        self._oldest = 0.0
        self._lock = threading.Lock()

    @property
    def pending(self) -> int:
        return len(self._buffer)

    def add(self, summary: dict) -> None:
        """Buffer one summary; writes the batch when it is full or old enough."""
        with self._lock:
            if not self._buffer:
                self._oldest = time.monotonic()
            self._buffer.append(summary)
            if len(self._buffer) > self.max_buffer:
                excess = len(self._buffer) - self.max_buffer
                del self._buffer[:excess]
                self.dropped += excess
        self.tick()

    def tick(self) -> None:
        """Write the batch if it is full or its oldest summary waited ``flush_interval_s``."""
        if self._buffer and (
            len(self._buffer) >= self.batch_size or time.monotonic() - self._oldest >= self.flush_interval_s
        ):
            self.flush()

    def flush(self) -> bool:
        """Write everything buffered; False (and kept for the next attempt) when the store failed."""
        with self._lock:
            batch, self._buffer = self._buffer, []
            if not batch:
                return True
            try:
                for group in _by_partition(batch).values():
                    self._write(group)
            except Exception as e:  # noqa: BLE001 - a failed write keeps the batch, never ends the caller
                self.errors += 1
                self._buffer = batch + self._buffer
                self._oldest = time.monotonic()
                log.warning("window log: writing %d window summaries failed: %s", len(batch), e)
                return False
            self.written += len(batch)
            return True

    close = flush

    def _write(self, group: list[dict]) -> None:
        first = group[0]
        data = encode(group, "jsonl")
        key = window_key(str(first.get("model")), str(first.get("model_version")), first.get("end"), data)
        self.store.put(key, data)


def window_key(model: str, version: str, end: object, data: bytes) -> str:
    """``windows/<model>/<version>/<day>/<time>-<uid>-<sha256>.jsonl`` for a batch ending at ``end``."""
    try:
        when = timestamps.parse_time(str(end))
    except ValueError:
        when = timestamps.now()
    stamp = when.strftime("%Y%m%dT%H%M%S%fZ")
    name = f"{stamp}-{uuid.uuid4().hex[:12]}-{sha256_bytes(data)}.jsonl"
    return f"{windows_prefix(model, version)}{when:%Y-%m-%d}/{name}"


def read_windows(store: ObjectStore, model: str, version: str | None = None) -> list[dict]:
    """Every stored window summary of ``model`` (optionally one version), ordered by window end.
    Each object's checksum is verified (``ChecksumError`` on a mismatch)."""
    summaries: list[dict] = []
    for key in store.list(windows_prefix(model, version)):
        parts = key.split("/")
        match = _NAME.match(parts[-1])
        if len(parts) != 5 or parts[0] != WINDOWS_PREFIX or match is None:
            continue
        summaries.extend(decode(store.get(key), CaptureKey(*parts[1:4], match["digest"], "jsonl"), store.uri(key)))
    return sorted(summaries, key=lambda s: (str(s.get("end") or ""), s.get("window_index") or 0))


def _by_partition(batch: list[dict]) -> dict[tuple, list[dict]]:
    groups: dict[tuple, list[dict]] = {}
    for summary in batch:
        end = str(summary.get("end") or "")[:10]
        key = (key_segment(str(summary.get("model"))), key_segment(str(summary.get("model_version"))), end)
        groups.setdefault(key, []).append(summary)
    return groups


def _finite(value: object) -> float | None:
    try:
        number = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None
    return number if number == number and abs(number) != float("inf") else None
