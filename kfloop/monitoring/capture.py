"""Data capture: every prediction, as a record, written in batches to the object store.

A capture record is one predicted row::

    {"request_id": "9f0c...:0",   # the client's id for the row; a request with n rows uses "<id>:<i>"
     "capture_id": "5b1e...:0",   # unique per record, even when a client reuses its x-request-id
     "time": "2024-05-01T12:00:00.123456Z",   # RFC 3339, UTC, when the prediction was made
     "model": "churn", "model_version": "3",
     "revision": "stable",        # which deployment answered: "stable" or "canary"
     "features": {"age": 41, "plan": "gold", "income": null},   # raw values as received
     "prediction": 1,             # what the predictor returned for the row (any JSON value)
     "unseen": {"plan": "platinum"}}   # categorical values the training schema does not know
                                       # (they are encoded as missing); {} when none

``capture_record`` builds one. A served request is handed over as one ``CaptureBatch``
(``kfloop.monitoring.capture_batch``: the request's columns as received, no work per row on the
request path; ``capture_rows.request_capture``). ``CaptureWriter`` buffers records and batches in
memory (``add`` never blocks on storage) and a background thread writes them as objects
``captures/<model>/<version>/<YYYY-MM-DD>/<time>-<uid>-<sha256>.<jsonl|parquet>``, partitioned
by the record's version and UTC date. The SHA-256 of the object's bytes is part of its name,
so each object is written atomically with its checksum, the content stays plain JSON Lines
(or Parquet: batches become columnar objects, one typed column per feature), and ``read_captures``
verifies it and reads every layout as the same records. The codecs live in ``kfloop.monitoring.capture_format``.

**The loss window.** Without a journal, what a killed process had buffered is lost (up to
``flush_interval_s`` of records). With ``journal_dir`` (``CaptureJournal``), ``add`` first appends
the records to a local journal file (one JSON line per record or per batch, written to the OS before ``add`` returns,
so before the answer leaves), and a segment of the journal is deleted once all its records are
stored. A writer started on the same folder replays what is left there. So a killed process (kill -9)
loses no record of an answered request; a machine crash can lose what the OS had not yet written to
disk (the journal is fsynced when a segment is closed, at each batch: at most ``flush_interval_s``).
Delivery is at least once: a kill between storing a batch and deleting its segment stores that batch
again at the next start (records keep their ``capture_id``, so a reader can tell). A journal folder
belongs to one writer at a time (an advisory lock; a second writer is a ConfigError).
"""

from __future__ import annotations

import collections
import datetime as dt
import fcntl
import json
import logging
import os
import threading
import time
import uuid
from collections.abc import Iterable
from pathlib import Path

import orjson

from kfloop import timestamps
from kfloop.errors import ConfigError
from kfloop.monitoring.capture_batch import JOURNAL_KEY, CaptureBatch, rows_of, stamp_times
from kfloop.monitoring.capture_format import FORMATS, JSON_OPTIONS, decode, encode, encode_batches, parse_key
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
    capture_id: str | None = None,
) -> dict:
    """One capture record (see the module docstring for the fields); ``capture_id`` defaults to a new
    uuid4, and ``request_id`` to the capture id."""
    capture_id = capture_id or uuid.uuid4().hex
    return {
        "request_id": request_id or capture_id,
        "capture_id": capture_id,
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

    ``add`` appends records, or a request's ``CaptureBatch``, to a bounded in-memory buffer; when the
    buffer holds ``max_buffer`` records, new records are dropped and counted (with a warning at most every
    ``warn_interval_s``). Batches are written when ``batch_size`` records wait or
    ``flush_interval_s`` has passed (a batch is split across objects when it does not fit; every
    object holds at most ``batch_size`` records); a failing store is retried with exponential backoff
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
        journal_dir: str | Path | None = None,
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
        self._buffer: collections.deque = collections.deque()  # (journal segment, record or batch)
        self._buffered = 0  # records in _buffer
        self._cond = threading.Condition()
        self._inflight = self._flush_waiters = 0
        self._closing, self._failing, self._stop = False, False, threading.Event()
        self._drop_log, self._error_log = Throttle(warn_interval_s), Throttle(warn_interval_s)
        self.journal = CaptureJournal(journal_dir, batch_size) if journal_dir is not None else None
        self.replayed = 0
        if self.journal is not None:
            replayed = self.journal.replay()
            self._buffer.extend(replayed)
            self.replayed = self._buffered = sum(rows_of(item) for _, item in replayed)
            if replayed:
                log.warning("capture journal %s: %d records not yet stored, replayed", journal_dir, self.replayed)
        self._thread = threading.Thread(target=self._run, name=f"capture-{model}", daemon=True)
        self._thread.start()

    @property
    def pending(self) -> int:
        with self._cond:
            return self._buffered + self._inflight

    def add(self, records: Iterable[dict] | CaptureBatch) -> None:
        """Queue records, or a request's batch, for writing; never blocks on storage. Drops (and
        counts) what does not fit in the buffer, and everything after ``close``."""
        if isinstance(records, CaptureBatch):
            items, n = [records], records.n_rows
        else:
            items = records if isinstance(records, list) else list(records)
            n = len(items)
        with self._cond:
            room = max(0 if self._closing else self.max_buffer - self._buffered, 0)
            if n > room:
                items = [records.slice(0, room)] if room and isinstance(records, CaptureBatch) else items[:room]
            accepted = min(n, room)
            segment = self.journal.append(items) if self.journal is not None and accepted else None
            self._buffer.extend((segment, item) for item in items if accepted)
            self._buffered += accepted
            lost = n - accepted
            self.dropped += lost
            if self._buffered >= self.batch_size:
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
        self._thread.join(max(1.0, deadline - time.monotonic()))  # stopping is prompt once _stop is set
        return flushed and not self._thread.is_alive()

    def __enter__(self) -> CaptureWriter:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _run(self) -> None:
        unwritten = 0
        while (batch := self._take_batch()) is not None:
            for (version, day, _), entries in _partition(batch).items():
                outcome = self._write(version, day, [item for _, item in entries])
                counts = [(segment, rows_of(item)) for segment, item in entries]
                n = sum(rows for _, rows in counts)
                with self._cond:
                    self._inflight -= n
                    if outcome == "stored":
                        self.written += n
                    else:
                        self.dropped += n
                        unwritten += n
                    if self.journal is not None and outcome != "stopped":  # stopped: replayed next start
                        self.journal.done(counts)
                    self._cond.notify_all()
        with self._cond:
            self.dropped += self._buffered
            unwritten += self._buffered
            self._buffer.clear()
            self._buffered = 0
            if self.journal is not None:
                self.journal.close()  # what was not stored stays in it, for the next writer
        if unwritten:
            log.error(
                "capture writer for %s stopped; %d records were not written (counted as dropped)", self.model, unwritten
            )

    def _take_batch(self) -> list[tuple] | None:
        """Up to ``batch_size`` records (a batch that does not fit is split: its rest stays first)."""
        deadline = time.monotonic() + self.flush_interval_s
        with self._cond:
            while not self._stop.is_set():
                now, size = time.monotonic(), self._buffered
                if size >= self.batch_size or (size and (self._flush_waiters or now >= deadline)):
                    if self.journal is not None:
                        self.journal.rotate()  # later records go to a new segment
                    return self._pop(self.batch_size)
                self._cond.wait(deadline - now if now < deadline else self.flush_interval_s)
        return None

    def _pop(self, limit: int) -> list[tuple]:
        """The oldest entries holding up to ``limit`` records (under the lock); a batch that does not fit
        is split, its rest stays first in the buffer."""
        batch, taken = [], 0
        while taken < limit and self._buffer:
            segment, item = self._buffer.popleft()
            rows = rows_of(item)
            if taken + rows > limit:
                self._buffer.appendleft((segment, item.slice(limit - taken, rows)))
                item, rows = item.slice(0, limit - taken), limit - taken
            batch.append((segment, item))
            taken += rows
        self._buffered -= taken
        self._inflight = taken
        return batch

    def _write(self, version: str, day: str, items: list) -> str:
        """Store one partition's records (dicts) or batches, retrying until it works or the writer is
        closed: "stored", "unencodable" (never storable) or "stopped"."""
        try:
            batches = isinstance(items[0], CaptureBatch)
            data = encode_batches(items, self.format) if batches else encode(items, self.format)
        except (TypeError, ValueError, KeyError, IndexError) as e:
            log.error("capture records of %s cannot be encoded as %s: %s", self.model, self.format, e)
            return "unencodable"
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
            return "stored"
        return "stopped"

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


def _partition(batch: list[tuple]) -> dict[tuple[str, str, bool], list[tuple]]:
    """``(journal segment, record or batch)`` pairs grouped by (model version, UTC date of the record's
    time, whether they are batches: those are stored column by column)."""
    today = timestamps.day()
    stamp_times([item for _, item in batch if isinstance(item, CaptureBatch)])
    groups: dict[tuple[str, str, bool], list[tuple]] = {}
    partitions: dict[tuple, tuple[str, str, bool]] = {}  # (version, time[:10], batch) as recorded -> partition
    for entry in batch:
        item = entry[1]
        if isinstance(item, CaptureBatch):
            raw = (item.model_version, item.stamp[:10], True)
        else:
            raw = (item.get("model_version"), str(item.get("time") or "")[:10], False)
        partition = partitions.get(raw)
        if partition is None:
            day = raw[1] if _is_date(raw[1]) else today
            partition = partitions[raw] = (key_segment(str(raw[0] or "unknown")), day, raw[2])
        groups.setdefault(partition, []).append(entry)
    return groups


class CaptureJournal:
    """Capture records on local disk from ``add`` until they are stored (see "The loss window" above).

    The folder holds numbered segments ``<n>.jsonl``; records are appended to the open segment, which
    is closed (fsynced) when the writer takes a batch or when it holds ``segment_records``; a closed
    segment whose records are all stored (or can never be) is deleted. With ``segment_records`` the
    writer's batch size, at most one segment is partly stored at any time, so a replay stores fewer
    than ``segment_records`` records twice (or than a request's rows, for a request larger than that). Not thread-safe:
    the writer calls it under its lock."""

    LOCK = "LOCK"

    def __init__(self, folder: str | Path, segment_records: int = 500):
        self.folder, self.segment_records = Path(folder), segment_records
        self._appended = 0
        self.folder.mkdir(parents=True, exist_ok=True)
        self._lock = open(self.folder / self.LOCK, "a")  # noqa: SIM115 - held for the journal's life
        try:
            fcntl.flock(self._lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self._lock.close()
            raise ConfigError(f"capture journal {self.folder} is in use by another process") from None
        self._remaining: dict[int, int] = {}
        self._closed: set[int] = set()
        existing = self._segments()
        self._next = (existing[-1] + 1) if existing else 1
        self._file = None
        self._segment: int | None = None

    def _segments(self) -> list[int]:
        return sorted(int(p.stem) for p in self.folder.glob("*.jsonl") if p.stem.isdigit())

    def _path(self, segment: int) -> Path:
        return self.folder / f"{segment:012d}.jsonl"

    def replay(self) -> list[tuple[int, dict | CaptureBatch]]:
        """The records and batches an earlier writer left (a torn last line, from a machine crash, is
        skipped)."""
        out: list[tuple[int, dict | CaptureBatch]] = []
        for segment in self._segments():
            path, n = self._path(segment), 0
            for line in path.read_bytes().splitlines():
                try:
                    item = json.loads(line)
                    if isinstance(item, dict) and JOURNAL_KEY in item:
                        item = CaptureBatch.from_journal(item)
                except (ValueError, KeyError, TypeError):
                    log.warning("capture journal %s: skipping a torn line", path)
                    continue
                if isinstance(item, (dict, CaptureBatch)):
                    out.append((segment, item))
                    n += rows_of(item)
            self._closed.add(segment)
            self._remaining[segment] = n
            if n == 0:
                self._delete(segment)
        return out

    def append(self, records: list[dict | CaptureBatch]) -> int:
        """Append records or batches, one line each, to the open segment (in the OS before this
        returns); its number. A segment holds at most ``segment_records`` records (unless one call
        brings more), so that a writer's batch completes the segment it starts in."""
        n = sum(rows_of(r) for r in records)
        if self._file is not None and self._appended + n > self.segment_records:
            self.rotate()
        if self._file is None:
            self._segment, self._next = self._next, self._next + 1
            self._file = open(self._path(self._segment), "ab", buffering=0)  # noqa: SIM115
            self._remaining[self._segment], self._appended = 0, 0
        line = JSON_OPTIONS | orjson.OPT_APPEND_NEWLINE
        data = b"".join(
            [
                orjson.dumps(r.to_journal() if isinstance(r, CaptureBatch) else r, option=line, default=_journal_value)
                for r in records
            ]
        )
        self._file.write(data)  # unbuffered: one write(2), in the page cache when it returns
        segment = self._segment
        self._remaining[segment] += n
        self._appended += n
        if self._appended >= self.segment_records:
            self.rotate()
        return segment

    def rotate(self) -> None:
        """Close the open segment (fsynced); the next ``append`` opens a new one."""
        if self._file is None:
            return
        os.fsync(self._file.fileno())
        self._file.close()
        segment, self._file, self._segment = self._segment, None, None
        self._closed.add(segment)
        if self._remaining.get(segment) == 0:
            self._delete(segment)

    def done(self, counts: Iterable[tuple[int | None, int]]) -> None:
        """Records of these segments (``(segment, records)`` pairs) are stored, or never can be."""
        totals: collections.Counter = collections.Counter()
        for segment, n in counts:
            if segment is not None:
                totals[segment] += n
        for segment, n in totals.items():
            self._remaining[segment] -= n
            if self._remaining[segment] <= 0 and segment in self._closed:
                self._delete(segment)

    def close(self) -> None:
        self.rotate()
        self._lock.close()  # releases the lock

    @property
    def pending(self) -> int:
        """Records in the journal not yet stored."""
        return sum(self._remaining.values())

    def _delete(self, segment: int) -> None:
        self._remaining.pop(segment, None)
        self._path(segment).unlink(missing_ok=True)


def _journal_value(value: object) -> object:
    """What orjson does not serialize itself: a request's bytes (V2 BYTES) as text, numpy arrays of
    other types as lists, anything else as its ``str``."""
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    if hasattr(value, "tolist"):
        return value.tolist()
    return str(value)


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
