"""Data capture: every prediction, as a record, written in batches to the object store.

A capture record is one predicted row::

    {"request_id": "9f0c...:0",   # unique per row; a request with n rows uses "<id>:<i>"
     "time": "2024-05-01T12:00:00.123456Z",   # RFC 3339, UTC, when the prediction was made
     "model": "churn", "model_version": "3",
     "revision": "stable",        # which deployment answered: "stable" or "canary"
     "features": {"age": 41, "plan": "gold", "income": null},   # raw values as received
     "prediction": 1,             # what the predictor returned for the row (any JSON value)
     "unseen": {"plan": "platinum"}}   # categorical values the training schema does not know
                                       # (they are encoded as missing); {} when none

``capture_record`` builds one. ``CaptureWriter`` buffers records in memory (``add`` never
blocks on storage) and a background thread writes them as objects
``captures/<model>/<version>/<YYYY-MM-DD>/<time>-<uid>-<sha256>.<jsonl|parquet>``, partitioned
by the record's version and UTC date. The SHA-256 of the object's bytes is part of its name,
so each object is written atomically with its checksum, the content stays plain JSON Lines
(or Parquet), and ``read_captures`` verifies it. The codecs live in ``kfloop.monitoring.capture_format``.
"""

from __future__ import annotations

import collections
import datetime as dt
import logging
import threading
import time
import uuid
from collections.abc import Iterable

from kfloop import timestamps
from kfloop.errors import ConfigError
from kfloop.monitoring.capture_format import FORMATS, decode, encode, parse_key
from kfloop.names import captures_prefix, key_segment
from kfloop.retry import Throttle, backoff_delay
from kfloop.store.objects import ObjectStore, sha256_bytes

log = logging.getLogger(__name__)


def capture_record(
    model: str,
    model_version: str,
    features: dict,
    prediction: object,
    *,
    revision: str = "stable",
    unseen: dict | None = None,
    request_id: str | None = None,
    time: str | None = None,
) -> dict:
    """One capture record (see the module docstring for the fields)."""
    return {
        "request_id": request_id or uuid.uuid4().hex,
        "time": time or timestamps.rfc3339(),
        "model": model,
        "model_version": str(model_version),
        "revision": revision,
        "features": features,
        "prediction": prediction,
        "unseen": unseen or {},
    }


class CaptureWriter:
    """Buffers capture records and writes them to ``store`` from a background thread.

    ``add`` appends to a bounded in-memory buffer; when the buffer holds ``max_buffer``
    records, new records are dropped and counted (with a warning at most every
    ``warn_interval_s``). Batches are written when ``batch_size`` records wait or
    ``flush_interval_s`` has passed; a failing store is retried with exponential backoff
    while the buffer absorbs new records. Counters: ``written``, ``dropped``,
    ``write_errors`` (failed store calls), and ``pending`` (buffered or being written).
    The thread starts with the writer; ``close`` stops it.
    """

    def __init__(
        self,
        store: ObjectStore,
        model: str,
        batch_size: int = 500,
        flush_interval_s: float = 5.0,
        max_buffer: int = 50_000,
        format: str = "jsonl",
        *,
        backoff_base: float = 0.5,
        backoff_max: float = 30.0,
        warn_interval_s: float = 30.0,
    ):
        if key_segment(model) != model:
            raise ConfigError(f"model name {model!r} cannot name a capture folder: use letters, digits, '.', '_', '-'")
        if format not in FORMATS:
            raise ConfigError(f"capture format {format!r} is not supported: expected one of {sorted(FORMATS)}")
        if batch_size < 1 or max_buffer < 1 or flush_interval_s <= 0:
            raise ConfigError(
                f"capture batch_size={batch_size}, max_buffer={max_buffer}, "
                f"flush_interval_s={flush_interval_s}: expected positive values"
            )
        self.store, self.model, self.format = store, model, format
        self.batch_size, self.flush_interval_s, self.max_buffer = batch_size, flush_interval_s, max_buffer
        self.backoff_base, self.backoff_max = backoff_base, backoff_max
        self.written = self.dropped = self.write_errors = 0
        self._buffer: collections.deque = collections.deque()
        self._cond = threading.Condition()
        self._inflight = self._flush_waiters = 0
        self._closing, self._failing, self._stop = False, False, threading.Event()
        self._drop_log, self._error_log = Throttle(warn_interval_s), Throttle(warn_interval_s)
        self._thread = threading.Thread(target=self._run, name=f"capture-{model}", daemon=True)
        self._thread.start()

    @property
    def pending(self) -> int:
        with self._cond:
            return len(self._buffer) + self._inflight

    def add(self, records: Iterable[dict]) -> None:
        """Queue records for writing; never blocks on storage. Drops (and counts) what
        does not fit in the buffer, and everything after ``close``."""
        records = records if isinstance(records, list) else list(records)
        with self._cond:
            room = 0 if self._closing else self.max_buffer - len(self._buffer)
            accepted = records if len(records) <= room else records[: max(room, 0)]
            self._buffer.extend(accepted)
            lost = len(records) - len(accepted)
            self.dropped += lost
            if len(self._buffer) >= self.batch_size:
                self._cond.notify_all()
        if lost and self._drop_log.ready():
            log.warning(
                "capture buffer for %s %s: dropped %d records (%d dropped so far, buffer limit %d)",
                self.model,
                "is closed" if self._closing else "is full",
                lost,
                self.dropped,
                self.max_buffer,
            )

    def flush(self, timeout: float = 30.0) -> bool:
        """Write everything buffered now; True when it was all written within ``timeout``."""
        with self._cond:
            self._flush_waiters += 1
            self._cond.notify_all()
            try:
                return self._cond.wait_for(lambda: not self._buffer and not self._inflight, timeout)
            finally:
                self._flush_waiters -= 1

    def close(self, timeout: float = 30.0) -> bool:
        """Refuse new records, write what is buffered (up to ``timeout``), stop the thread.
        Records that could not be written by then are counted as dropped. True when all
        records were written."""
        deadline = time.monotonic() + timeout
        with self._cond:
            self._closing = True
        flushed = self.flush(timeout)
        self._stop.set()
        with self._cond:
            self._cond.notify_all()
        self._thread.join(max(0.0, deadline - time.monotonic()))
        return flushed and not self._thread.is_alive()

    def __enter__(self) -> CaptureWriter:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _run(self) -> None:
        unwritten = 0
        while (batch := self._take_batch()) is not None:
            for (version, day), rows in _partition(batch).items():
                stored = self._write(version, day, rows)
                with self._cond:
                    self._inflight -= len(rows)
                    if stored:
                        self.written += len(rows)
                    else:
                        self.dropped += len(rows)
                        unwritten += len(rows)
                    self._cond.notify_all()
        with self._cond:
            self.dropped += len(self._buffer)
            unwritten += len(self._buffer)
            self._buffer.clear()
        if unwritten:
            log.error(
                "capture writer for %s stopped; %d records were not written (counted as dropped)", self.model, unwritten
            )

    def _take_batch(self) -> list[dict] | None:
        deadline = time.monotonic() + self.flush_interval_s
        with self._cond:
            while not self._stop.is_set():
                now, size = time.monotonic(), len(self._buffer)
                if size >= self.batch_size or (size and (self._flush_waiters or now >= deadline)):
                    batch = [self._buffer.popleft() for _ in range(min(size, self.batch_size))]
                    self._inflight = len(batch)
                    return batch
                self._cond.wait(deadline - now if now < deadline else self.flush_interval_s)
        return None

    def _write(self, version: str, day: str, rows: list[dict]) -> bool:
        """Store one partition's rows, retrying until it works or the writer is closed."""
        try:
            data = encode(rows, self.format)
        except (TypeError, ValueError) as e:
            log.error("capture records of %s cannot be encoded as %s: %s", self.model, self.format, e)
            return False
        key = capture_key(self.model, version, day, data, self.format)
        attempt = 0
        while not self._stop.is_set():
            try:
                self.store.put(key, data)
            except Exception as e:  # a background writer must survive any store failure
                attempt += 1
                self._note_failure(attempt, e)
                self._stop.wait(backoff_delay(attempt, self.backoff_base, self.backoff_max))
                continue
            with self._cond:
                failed, self._failing = self._failing, False
            if failed:
                log.info("capture store for %s works again", self.model)
            return True
        return False

    def _note_failure(self, attempt: int, error: Exception) -> None:
        with self._cond:
            self.write_errors += 1
            first, self._failing = not self._failing, True
        if self._error_log.ready() or first:
            log.warning(
                "capture write for %s failed (attempt %d, %d records pending; retrying): %s",
                self.model,
                attempt,
                self.pending,
                error,
            )


def capture_key(model: str, version: str, day: str, data: bytes, format: str) -> str:
    """The key of a capture object holding ``data`` (the layout in the module docstring)."""
    name = f"{timestamps.key_stamp()}-{uuid.uuid4().hex[:12]}-{sha256_bytes(data)}.{format}"
    return f"{captures_prefix(model, version)}{key_segment(day)}/{name}"


def _partition(batch: list[dict]) -> dict[tuple[str, str], list[dict]]:
    """Records grouped by (model version, UTC date of their time)."""
    today = timestamps.day()
    groups: dict[tuple[str, str], list[dict]] = {}
    partitions: dict[tuple, tuple[str, str]] = {}  # (version, time[:10]) as recorded -> partition
    for record in batch:
        raw = (record.get("model_version"), str(record.get("time") or "")[:10])
        partition = partitions.get(raw)
        if partition is None:
            day = raw[1] if _is_date(raw[1]) else today
            partition = partitions[raw] = (key_segment(str(raw[0] or "unknown")), day)
        groups.setdefault(partition, []).append(record)
    return groups


def _is_date(text: str) -> bool:
    try:
        return dt.date.fromisoformat(text).isoformat() == text
    except ValueError:
        return False


def read_captures(
    store: ObjectStore, model: str, version: str | None = None, since: dt.datetime | dt.date | str | None = None
) -> list[dict]:
    """All capture records of ``model`` (optionally one version, and at or after ``since``),
    oldest first. Every object's checksum is verified (ChecksumError on mismatch)."""
    cutoff = _as_utc(since) if since is not None else None
    records: list[dict] = []
    for key in store.list(captures_prefix(model, version)):
        parsed = parse_key(key)
        if parsed is None or (cutoff is not None and parsed.day < cutoff.date().isoformat()):
            continue
        records.extend(decode(store.get(key), parsed, store.uri(key)))
    if cutoff is not None:
        records = [r for r in records if _record_time(r) >= cutoff]
    return sorted(records, key=_record_time)


def _record_time(record: dict) -> dt.datetime:
    try:
        return _as_utc(str(record.get("time")))
    except ConfigError:
        return dt.datetime.min.replace(tzinfo=dt.timezone.utc)


def _as_utc(value: dt.datetime | dt.date | str) -> dt.datetime:
    if isinstance(value, str):
        try:
            value = timestamps.parse_time(value)
        except ValueError:
            raise ConfigError(f"time {value!r} is not an ISO 8601 / RFC 3339 timestamp") from None
    elif not isinstance(value, dt.datetime):
        value = dt.datetime.combine(value, dt.time())
    return value.astimezone(dt.timezone.utc) if value.tzinfo else value.replace(tzinfo=dt.timezone.utc)
