"""A durable, at-least-once outbox that delivers CloudEvents to a sink URL (Knative ``K_SINK``).

``append`` writes the event as one file in the outbox folder (temp file, fsync, rename,
fsync of the folder) and returns; it never touches the network. A background thread
POSTs pending files in order (structured mode) and deletes each only after a 2xx, so an
event is delivered at least once, even across a crash or restart (pending files are
picked up by ``start``); receivers deduplicate on the event ``id``. Failures are retried
with exponential backoff, holding back later events to keep the order. A 4xx other than
408/429 is permanent: the event is moved to ``dead/`` (with a ``.reason`` note) and
counted, never dropped. Without a sink URL events stay in the folder.

On a cluster the folder is an ``emptyDir`` that dies with the pod, so an outbox may be given an
object store (``spill``): ``stop`` first tries to deliver what is pending for ``drain_s`` seconds,
then moves every event still pending (the sink down, or none configured) to the store as a sealed
object ``outbox/<name>/<file>`` (``kfloop.names.outbox_prefix``), and ``start`` adopts the events
stopped outboxes of that name left there (the next pod of the same deployment: a scale-down, a
rollback, a restart), checksums verified, before delivering anything. What a pod deletion can
lose is thus bounded: nothing on a graceful stop (SIGTERM within the grace period) with the store
reachable; on a kill without it (SIGKILL, a lost node) the events pending at that moment, which
with a reachable sink are those appended within the last delivery attempt. Events adopted twice
(two pods starting at once) are delivered twice: receivers deduplicate on the event ``id``.

One process at a time may deliver from a folder. Counters for Prometheus: ``delivered``,
``failed_attempts``, ``dead_letters``, ``depth`` (pending events), ``spilled`` and ``adopted``.
"""

from __future__ import annotations

import json
import logging
import os
import re
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from pathlib import Path

from kfloop.events.cloudevents import DeliveryError, post_event, to_structured, validate_event
from kfloop.names import outbox_prefix
from kfloop.retry import Throttle, backoff_delay
from kfloop.store.objects import ObjectStore, seal_json, unseal_json

log = logging.getLogger(__name__)


class Outbox:
    """Events waiting for delivery, as files ``<stamp>-<uid>.json`` in ``folder``."""

    def __init__(
        self,
        folder: str | Path,
        sink_url: str | None,
        *,
        timeout: float = 2.0,
        backoff_base: float = 0.5,
        backoff_max: float = 60.0,
        jitter: float = 0.2,
        idle_poll_s: float = 1.0,
        headers: Callable[[], Mapping[str, str]] | None = None,
        spill: ObjectStore | None = None,
        spill_prefix: str | None = None,
    ):
        self.folder, self.sink_url = Path(folder), sink_url or None
        self.headers = headers  # called per delivery: extra request headers (a sink's bearer token)
        self.dead_folder = self.folder / "dead"
        self.timeout, self.backoff_base, self.backoff_max, self.jitter = timeout, backoff_base, backoff_max, jitter
        self.idle_poll_s = idle_poll_s
        self.delivered = self.failed_attempts = self.dead_letters = 0
        self.spill = spill  # an ObjectStore: where stop() leaves undelivered events, start() adopts them
        self.spill_prefix = spill_prefix or outbox_prefix(self.folder.name)
        self.spilled = self.adopted = 0
        self.folder.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._last_stamp = max((_stamp(p) for p in self.pending()), default=0)
        self._wake, self._stopping = threading.Event(), threading.Event()
        self._thread: threading.Thread | None = None
        self._warned_no_sink = False
        self._failure_log = Throttle(60.0)

    @classmethod
    def for_settings(cls, settings, name: str, sink_url: str | None, **options) -> Outbox:
        """The outbox ``<KFLOOP_HOME>/outbox/<name>/``."""
        return cls(Path(settings.home) / "outbox" / name, sink_url, **options)

    @property
    def depth(self) -> int:
        return len(self.pending())

    def pending(self) -> list[Path]:
        """Pending event files, oldest first."""
        return sorted(self.folder.glob("*.json"))

    def stats(self) -> dict[str, int]:
        return {
            "delivered": self.delivered,
            "failed_attempts": self.failed_attempts,
            "dead_letters": self.dead_letters,
            "depth": self.depth,
        }

    def spill_pending(self) -> int:
        """Move every pending event to the spill store (stop does this); returns how many moved.
        An event the store does not take stays in the folder (and is logged)."""
        moved = 0
        for path in self.pending():
            try:
                doc = {"file": path.name, "event": json.loads(path.read_bytes())}
                self.spill.put(self.spill_prefix + path.name, seal_json(doc))
            except FileNotFoundError:
                continue
            except Exception as e:
                log.error(
                    "could not keep %d undelivered events in the object store (%s): they stay in %s",
                    self.depth,
                    e,
                    self.folder,
                )
                break
            path.unlink(missing_ok=True)
            moved += 1
        if moved:
            self.spilled += moved
            log.warning("%d undelivered events kept in %s for the next start", moved, self.spill.uri(self.spill_prefix))
        return moved

    def adopt(self) -> int:
        """Take over the events stopped outboxes of this name left in the spill store (start does
        this); returns how many. A stored event whose checksum fails stays in the store (logged)."""
        try:
            keys = sorted(self.spill.list(self.spill_prefix))
        except Exception as e:
            log.error("could not list undelivered events in the object store (%s); they stay there", e)
            return 0
        taken = 0
        for key in keys:
            try:
                doc = unseal_json(self.spill.get(key), key)
                name = str(doc["file"])
                if not _EVENT_FILE.match(name):
                    raise ValueError(f"{key}: {name!r} is not an outbox file name")
                self._write(self.folder / name, json.dumps(doc["event"]).encode())
                self.spill.delete(key)
            except Exception as e:
                log.error("could not adopt undelivered event %s (it stays in the store): %s", key, e)
                continue
            taken += 1
        if taken:
            self.adopted += taken
            with self._lock:
                self._last_stamp = max([self._last_stamp, *(_stamp(p) for p in self.pending())])
            log.info("adopted %d undelivered events from %s", taken, self.spill.uri(self.spill_prefix))
        return taken

    def append(self, event: Mapping) -> Path:
        """Store ``event`` durably and wake the delivery thread; returns the event's file.

        Raises InvalidRequest for an event without the required CloudEvents attributes.
        """
        _, body = to_structured(validate_event(event))
        path = self.folder / f"{self._next_stamp():020d}-{uuid.uuid4().hex[:8]}.json"
        self._write(path, body)
        if self.sink_url is None:
            self._note_no_sink()
        self._wake.set()
        return path

    def _write(self, path: Path, body: bytes) -> None:
        fd, tmp = tempfile.mkstemp(dir=self.folder, prefix=".tmp-")
        with os.fdopen(fd, "wb") as f:
            f.write(body)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        _fsync_dir(self.folder)

    def start(self) -> None:
        """Start delivering (pending events from earlier runs and, with a spill store, those stopped
        outboxes of this name left there, first); idempotent."""
        if self.spill is not None and (self._thread is None or not self._thread.is_alive()):
            self.adopt()
        if self.sink_url is None:
            self._note_no_sink()
            return
        if self._thread is not None and self._thread.is_alive():
            return
        self._remove_stale_temp_files()
        self._stopping.clear()
        self._thread = threading.Thread(target=self._run, name=f"outbox-{self.folder.name}", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 5.0, drain_s: float = 0.0) -> bool:
        """Stop the delivery thread, after trying for ``drain_s`` seconds to deliver what is pending;
        True when it has stopped within ``timeout``. Undelivered events stay on disk for the next
        ``start`` or, with a spill store, move to it."""
        if drain_s > 0 and self._thread is not None and self._thread.is_alive():
            self.drain(drain_s)
        self._stopping.set()
        self._wake.set()
        stopped = True
        if self._thread is not None:
            self._thread.join(timeout)
            stopped = not self._thread.is_alive()
        if self.spill is not None and stopped:
            self.spill_pending()
        return stopped

    def drain(self, timeout: float) -> bool:
        """Wait until no event is pending; True when the outbox emptied within ``timeout``."""
        deadline = time.monotonic() + timeout
        while self.depth:
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.02)
        return True

    def _run(self) -> None:
        import httpx

        attempt = 0
        with httpx.Client(timeout=self.timeout) as client:
            while not self._stopping.is_set():
                self._wake.clear()
                pending = self.pending()
                if not pending:
                    self._wake.wait(self.idle_poll_s)
                    continue
                for path in pending:
                    if self._stopping.is_set():
                        break
                    if not self._send(path, client, attempt):
                        attempt += 1
                        self._stopping.wait(backoff_delay(attempt, self.backoff_base, self.backoff_max, self.jitter))
                        break
                    attempt = 0

    def _send(self, path: Path, client, attempt: int) -> bool:
        """Try the oldest pending event; True when it is resolved (delivered or dead)."""
        try:
            body = path.read_bytes()
        except FileNotFoundError:
            return True
        try:
            post_event(self.sink_url, body, self.timeout, client, self.headers() if self.headers else None)
        except DeliveryError as e:
            if e.permanent:
                self._bury(path, str(e))
                return True
            self.failed_attempts += 1
            if self._failure_log.ready() or attempt == 0:
                log.warning(
                    "%s (attempt %d for %s; %d pending, retrying with backoff)", e, attempt + 1, path.name, self.depth
                )
            return False
        path.unlink(missing_ok=True)
        self.delivered += 1
        if attempt:
            log.info("event sink %s accepted %s after %d failed attempts", self.sink_url, path.name, attempt)
        return True

    def _bury(self, path: Path, reason: str) -> None:
        self.dead_folder.mkdir(exist_ok=True)
        (self.dead_folder / f"{path.name}.reason").write_text(reason + "\n")
        os.replace(path, self.dead_folder / path.name)
        self.dead_letters += 1
        log.error("event %s rejected permanently, moved to %s: %s", path.name, self.dead_folder, reason)

    def _next_stamp(self) -> int:
        with self._lock:
            self._last_stamp = max(time.time_ns(), self._last_stamp + 1)
            return self._last_stamp

    def _note_no_sink(self) -> None:
        if not self._warned_no_sink:
            self._warned_no_sink = True
            log.warning("no event sink URL configured (K_SINK): events are kept in %s", self.folder)

    def _remove_stale_temp_files(self, older_than_s: float = 60.0) -> None:
        for tmp in self.folder.glob(".tmp-*"):
            try:
                if time.time() - tmp.stat().st_mtime > older_than_s:
                    tmp.unlink()
            except FileNotFoundError:
                pass


_EVENT_FILE = re.compile(r"^[0-9]{1,20}-[0-9a-f]{1,32}\.json$")


def _stamp(path: Path) -> int:
    try:
        return int(path.name.split("-", 1)[0])
    except ValueError:
        return 0


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
