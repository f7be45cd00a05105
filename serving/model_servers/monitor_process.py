"""The monitor process: the drift transformer's capture and drift checks in a child process, with its own GIL.

In the transformer's own process, the capture writer's and the drift monitor's threads held the GIL
for milliseconds at a time (a drift window's checks, a capture object's conversion) and their queued
rows made the garbage collector's young collections long; each was a pause for the requests being
served (issue 13: at one request at a time they were most of the transformer's p99). Here the
transformer only appends each answered request to a pipe, as bytes it already has, and the child
(``python -m kfloop.serving.model_servers.monitor_process CONFIG``) decodes it again with the same
``RequestDecoder`` and hands it to an ``Observer`` (``observer.py``): the same captures, windows and
events as in-process, written by another process.

The pipe (transformer -> child, the child's stdin) carries frames: ``FRAME`` (three little-endian
uint32: the lengths of a JSON header, the request body, the answer) and those three. A header is
``["r", protocol, request_id, epoch_seconds, served_version, revision, rejected_requests, rows]`` for
an answered request (body: the request as JSON, V1 or V2; answer: the answer in the client's protocol,
as JSON) or ``["s", sequence]`` asking for the counters. The child answers on its stdout, one JSON
object a line: ``{"ready": ...}`` once loaded (or ``{"error": ...}`` and exit 1), and ``{"stats":
..., "sequence": n}`` per request for them; its logs go to stderr, with the transformer's.

The transformer never waits for the child on the request path: a request's frame goes into the pipe
(1 MiB) when it is answered, before the answer leaves; when the pipe is full, frames wait in a buffer
of at most ``max_buffer_bytes``, tried again every ``FLUSH_SECONDS``; a request that does not fit, or
comes while the child is down, is dropped and counted (``kfloop_drift_rows_dropped``
and ``kfloop_capture_records_dropped``). A child that exits is started again after a second. At
shutdown the transformer closes the pipe: the child checks what is queued, writes the captures,
delivers or keeps the events (``Observer.stop``) and exits. The child ignores SIGTERM and SIGINT (a
process group's signal reaches it too): it ends when its stdin does, so a killed transformer still has
its last requests captured (all but those whose frames were still in the buffer).
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import logging
import os
import select
import signal
import struct
import subprocess
import sys
import threading
import time
from types import SimpleNamespace
from typing import Any, BinaryIO

import orjson

FRAME = struct.Struct("<III")  # header, request body and answer lengths
FLUSH_SECONDS = 0.002  # how often frames the pipe had no room for are tried again
MAX_BUFFER_BYTES = 64 << 20  # frames waiting in the transformer at most (more are dropped, counted)
PIPE_BYTES = 1 << 20  # the pipe's capacity asked of Linux (F_SETPIPE_SZ; default 64 KiB)
RESTART_SECONDS = 1.0
STATS_TIMEOUT_S = 2.0

logger = logging.getLogger("kfloop.serving.model_servers.monitor_process")

MONITOR_COUNTERS = (
    "windows_checked",
    "drift_detected",
    "rows_dropped",
    "rows_skipped",
    "rows_submitted",
    "rows_checked",
    "rows_unreferenced",
    "check_cpu_s",
    "errors",
    "pending_rows",
    "window_rows",
)
CAPTURE_COUNTERS = ("written", "dropped", "write_errors", "pending")
OUTBOX_COUNTERS = ("depth", "delivered", "dead_letters")


def frame(header: list, body: bytes = b"", answer: bytes = b"") -> bytes:
    head = orjson.dumps(header)
    return b"".join((FRAME.pack(len(head), len(body), len(answer)), head, body, answer))


def read_frame(stream: BinaryIO) -> tuple[list, bytes, bytes] | None:
    """The next frame of ``stream``; None at its end (a frame cut short is its end too)."""
    lengths = stream.read(FRAME.size)
    if len(lengths) < FRAME.size:
        return None
    head_n, body_n, answer_n = FRAME.unpack(lengths)
    data = stream.read(head_n + body_n + answer_n)
    if len(data) < head_n + body_n + answer_n:
        return None
    return orjson.loads(data[:head_n]), data[head_n : head_n + body_n], data[head_n + body_n :]


def stats_of(observer: Any, errors: int = 0) -> dict:
    """The counters the transformer's metrics read (``transformer_metrics``), as JSON values."""
    monitor, capture, outbox = observer.parts()
    values = {name: getattr(monitor, name, 0) for name in MONITOR_COUNTERS}
    values["errors"] += errors
    last = monitor.last_signals
    return {
        "monitor": {
            **values,
            "versions": list(getattr(monitor, "versions", ())),
            "last_p_values": monitor.last_p_values,
            "signal_windows": [[n, s, c] for (n, s), c in getattr(monitor, "signal_windows", {}).items()],
            "violations": dict(monitor.violations),
            "last_signals": {name: result.value for name, result in last.items() if result is not None},
        },
        "capture": {name: getattr(capture, name) for name in CAPTURE_COUNTERS},
        "outbox": {name: getattr(outbox, name) for name in OUTBOX_COUNTERS},
    }


class MonitorProcess:
    """The transformer's side: starts the child with ``config`` (``child_config``), sends it the answered
    requests, and reads its counters for the metrics (``parts``, shaped as ``Observer.parts``)."""

    def __init__(self, config: dict, max_buffer_bytes: int = MAX_BUFFER_BYTES, python: str = sys.executable):
        self.config, self.max_buffer_bytes, self.python = config, max_buffer_bytes, python
        self._lock = threading.Lock()  # the buffer and the pipe: the event loop and the metrics' thread
        self._buffer = bytearray()
        # the frames not yet wholly written, as (where each ends, its rows), counting every byte ever buffered
        self._frames: collections.deque[tuple[int, int]] = collections.deque()
        self._buffered_bytes = self._written_bytes = 0
        self._flush_scheduled = False
        self._stats_cond = threading.Condition()
        self._stats: dict | None = None
        self._stats_seen = 0
        self._sequence = 0
        self._process: subprocess.Popen | None = None
        self._stopping = False
        self.rows_lost = 0  # rows dropped here: buffer full, or the child down
        self.restarts = 0

    def start(self, timeout: float = 120.0) -> dict:
        """Start the child and wait until it has loaded; what it said when ready. ``ConfigError`` with the
        child's message when it could not load (a bad bundle, an unreachable registry...)."""
        self._spawn()
        line = self._read_line(self._process, timeout)
        info = orjson.loads(line) if line else {"error": f"no answer in {timeout:.0f} s", "type": ""}
        if "ready" not in info:
            self._process.kill()
            raise _startup_error(info["type"], info["error"])
        threading.Thread(target=self._read_child, name="monitor-process", daemon=True).start()
        return info

    def observe(
        self,
        protocol: str,
        body: bytes,
        answer: bytes,
        request_id: str,
        served: str | None,
        revision: str | None,
        rejected: int,
        rows: int,
    ) -> None:
        """Queue one answered request for the child (called on the event loop; never blocks)."""
        data = frame(["r", protocol, request_id, time.time(), served, revision, rejected, rows], body, answer)
        with self._lock:
            if self._process is None or len(self._buffer) + len(data) > self.max_buffer_bytes:
                self.rows_lost += rows
                return
            self._append(data, rows)
            if self._flush_scheduled:
                return
            if self._write(blocking_until=None):  # in the pipe before the answer leaves (a kill loses none)
                return
            self._flush_scheduled = True
        asyncio.get_running_loop().call_later(FLUSH_SECONDS, self._flush)

    def _flush(self) -> None:
        """Write what the pipe takes now; what is left, at the next ``FLUSH_SECONDS`` (on the event loop)."""
        with self._lock:
            self._write(blocking_until=None)
            self._flush_scheduled = bool(self._buffer)
        if self._flush_scheduled:
            asyncio.get_running_loop().call_later(FLUSH_SECONDS, self._flush)

    def _write(self, blocking_until: float | None) -> bool:
        """Write the buffer to the child (under the lock): what the pipe takes now, or until ``blocking_until``
        (monotonic) all of it; False when something is left."""
        while self._buffer:
            try:
                n = os.write(self._process.stdin.fileno(), self._buffer)
            except BlockingIOError:
                left = None if blocking_until is None else blocking_until - time.monotonic()
                if left is None or left <= 0:
                    return False
                select.select([], [self._process.stdin], [], left)
                continue
            except (BrokenPipeError, ValueError, OSError):  # the child is gone: its reader restarts it
                self._drop_buffer()
                return False
            del self._buffer[:n]
            self._written_bytes += n
            while self._frames and self._frames[0][0] <= self._written_bytes:
                self._frames.popleft()
        return True

    def _append(self, data: bytes, rows: int) -> None:
        self._buffer += data
        self._buffered_bytes += len(data)
        self._frames.append((self._buffered_bytes, rows))

    def _drop_buffer(self) -> None:
        self.rows_lost += sum(rows for _, rows in self._frames)
        self._written_bytes = self._buffered_bytes  # (what is dropped counts as gone)
        self._buffer.clear()
        self._frames.clear()

    def stats(self, timeout: float = STATS_TIMEOUT_S) -> dict | None:
        """The child's counters after every request sent so far was queued there; the last ones it sent
        when it does not answer within ``timeout`` (None before any)."""
        with self._lock:
            if self._process is None:
                return self._stats
            self._sequence += 1
            sequence = self._sequence
            self._append(frame(["s", sequence]), 0)
            self._write(blocking_until=time.monotonic() + timeout)
        with self._stats_cond:
            self._stats_cond.wait_for(lambda: self._stats_seen >= sequence, timeout)
            return self._stats

    def parts(self) -> tuple:
        """The drift monitor, capture writer and outbox as the metrics read them, from the child's counters."""
        stats = self.stats()
        if stats is None:
            return None, None, None
        m, c = dict(stats["monitor"]), dict(stats["capture"])
        m["rows_dropped"] += self.rows_lost
        c["dropped"] += self.rows_lost
        m["errors"] += self.restarts
        m["signal_windows"] = collections.Counter({(n, s): count for n, s, count in m["signal_windows"]})
        m["last_signals"] = {name: SimpleNamespace(value=value) for name, value in m["last_signals"].items()}
        return SimpleNamespace(**m), SimpleNamespace(**c), SimpleNamespace(**stats["outbox"])

    def stop(self, timeout: float) -> None:
        """Send what is buffered, close the pipe and wait for the child to check, write and deliver what it
        holds (``Observer.stop``: about three times ``timeout``)."""
        with self._lock:
            self._stopping = True
            process = self._process
            if process is None:
                return
            if not self._write(blocking_until=time.monotonic() + timeout):
                self._drop_buffer()
            try:
                process.stdin.close()
            except OSError:
                pass
        try:
            process.wait(3 * timeout + 5)
        except subprocess.TimeoutExpired:
            logger.error("the monitor process did not stop within %.0f s; killed", 3 * timeout + 5)
            process.kill()

    def _spawn(self) -> None:
        process = subprocess.Popen(
            [self.python, "-m", __name__, orjson.dumps(self.config).decode()],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            bufsize=0,
        )
        os.set_blocking(process.stdin.fileno(), False)
        try:
            import fcntl

            fcntl.fcntl(process.stdin.fileno(), getattr(fcntl, "F_SETPIPE_SZ", 1031), PIPE_BYTES)
        except OSError:  # (Linux only; elsewhere the default capacity)
            pass
        self._process = process

    @staticmethod
    def _read_line(process: subprocess.Popen, timeout: float) -> bytes:
        ready, _, _ = select.select([process.stdout], [], [], timeout)
        return process.stdout.readline() if ready else b""

    def _read_child(self) -> None:
        """The child's answers (counters); when it exits, start it again (unless stopping)."""
        while True:
            process = self._process
            for line in iter(process.stdout.readline, b""):
                message = orjson.loads(line)
                if "stats" in message:
                    with self._stats_cond:
                        self._stats = message["stats"]
                        self._stats_seen = max(self._stats_seen, message.get("sequence", 0))
                        self._stats_cond.notify_all()
            code = process.wait()
            with self._lock:
                if self._stopping:
                    return
                logger.error("the monitor process exited with %s; starting it again in %.0f s", code, RESTART_SECONDS)
                self._drop_buffer()
                self._process = None
            with self._stats_cond:  # waiting for counters that will not come
                self._stats_seen = self._sequence
                self._stats_cond.notify_all()
            time.sleep(RESTART_SECONDS)
            with self._lock:
                if self._stopping:
                    return
                self.restarts += 1
                self._spawn()
            line = self._read_line(self._process, 120.0)
            if b"ready" not in line:
                logger.error("the monitor process did not start again: %s", line.decode(errors="replace"))


def _startup_error(kind: str, message: str) -> Exception:
    """The child's startup failure as the transformer's: kfloop's own errors as they were raised (a bad
    flag, a bundle that fails its checksum), anything else as a ``ConfigError`` naming the child."""
    from kfloop import errors

    cls = getattr(errors, kind, None)
    if isinstance(cls, type) and issubclass(cls, errors.KfloopError):
        try:
            return cls(message)
        except TypeError:
            pass
    return errors.ConfigError(f"the monitor process did not start: {kind + ': ' if kind else ''}{message}")


def child_config(
    name: str,
    model_dir: str,
    version: str,
    options: Any,
    sink: str | None,
    outbox_backoff_max: float,
) -> dict:
    """What the child needs to build the transformer's ``Observer`` (it reads ``KFLOOP_*`` settings itself)."""
    from kfloop.serving.model_servers.observer import MonitorOptions

    return {
        "name": name,
        "model_dir": str(model_dir),
        "version": version,
        "options": dataclasses.asdict(MonitorOptions.of(options)),
        "sink": sink,
        "outbox_backoff_max": outbox_backoff_max,
    }


class ChildLoop:
    """The child's side: decodes each request again and hands it to ``observer`` (``Observer``)."""

    def __init__(self, observer: Any, out: BinaryIO):
        from kfloop.inference.requests import v2_tensors

        self.observer, self.out, self._v2_tensors = observer, out, v2_tensors
        self.errors = 0  # requests it could not decode (the transformer had accepted them)

    def run(self, stream: BinaryIO) -> None:
        while (item := read_frame(stream)) is not None:
            header, body, answer = item
            if header[0] == "s":
                self._send({"stats": stats_of(self.observer, self.errors), "sequence": header[1]})
            else:
                self.handle(header, body, answer)

    def handle(self, header: list, body: bytes, answer: bytes) -> None:
        _, protocol, request_id, at, served, revision, rejected, _ = header
        observer = self.observer
        observer.rejected_requests = rejected
        try:
            doc = orjson.loads(body)
            tensors = self._v2_tensors(doc) if protocol == "v2" else None
            decoded = (
                observer.decoder.decode_v2_inputs(tensors)
                if tensors is not None
                else observer.decoder.decode_v1(doc, body)
            )
            answer_doc = orjson.loads(answer)
        except Exception:  # noqa: BLE001 - the transformer decoded it; a failure here is counted, never fatal
            self.errors += 1
            logger.exception("monitor process: could not decode request %s again", request_id)
            return
        observer.observe(doc, tensors, decoded, answer_doc, request_id, served, revision, at)

    def _send(self, message: dict) -> None:
        self.out.write(orjson.dumps(message) + b"\n")
        self.out.flush()


def build_observer(config: dict, settings: Any) -> Any:
    from kfloop.serving.model_servers.observer import MonitorOptions, Observer, open_capture_store, open_outbox
    from kfloop.serving.model_servers.registered import fetch_registered

    name, options = config["name"], MonitorOptions(**config["options"])
    store = open_capture_store(settings)
    outbox = open_outbox(settings, name, options.revision, config["sink"], config["outbox_backoff_max"], store)

    def references(version: str):  # another answering version's bundle, from the registry
        return fetch_registered(f"{name}:{version}", settings)[0]

    return Observer(name, config["model_dir"], config["version"], store, outbox, options, references)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    signal.signal(signal.SIGTERM, signal.SIG_IGN)  # the process group's signal: the end of stdin ends this
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    out = os.fdopen(os.dup(1), "wb")  # the answers; anything else printed goes to stderr
    os.dup2(2, 1)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(process)d %(name)s %(levelname)s %(message)s")
    from kfloop.config import Settings

    try:
        observer = build_observer(orjson.loads(argv[0]), Settings.from_env())
    except Exception as e:  # noqa: BLE001 - reported to the transformer, which refuses to start
        logger.exception("monitor process: could not start")
        out.write(orjson.dumps({"error": str(e), "type": type(e).__name__}) + b"\n")
        out.flush()
        return 1
    loop = ChildLoop(observer, out)
    loop._send({"ready": True, "backend": observer.backend, "capture_location": observer.capture_location})
    import gc

    gc.collect()
    gc.freeze()
    stdin = os.fdopen(0, "rb", buffering=1 << 20)
    loop.run(stdin)
    observer.stop(observer.options.shutdown_seconds)
    try:  # the last counters, for a transformer still reading (one that was killed is not)
        loop._send({"stats": stats_of(observer, loop.errors), "sequence": 0})
    except OSError:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
