"""The drift transformer's traffic mirror: shadow traffic on a cluster, where KServe has none (kserve#2978).

The mirror state (``kfloop.rollout.mirror``: candidate version, URL and percentage, on the object
store) is read every ``poll_seconds`` on the mirror's own thread, never on the request path; a new
state applies from the next request (no restart, no new revision). After the predictor answered a
request (the client's answer is built from that answer alone), ``after_answer`` picks ``percent`` % of
the requests at random and sends each one, as a task on the event loop, to the candidate: the body the
predictor got, its content type and the same ``x-request-id``, over pooled connections of its own
(``http_pool``), with ``timeout`` seconds for an answer. At most ``max_in_flight`` mirrored requests
run at once; more are dropped (and counted), so a slow or dead candidate never piles up work behind
live traffic, and nothing it does reaches the client. Requests the predictor refused or failed are
not mirrored.

Each mirrored request becomes a shadow record (the candidate's answer or error, and the primary's
answer, under the client's request id); the thread writes them every ``flush_seconds`` as one object
per candidate version (``kfloop.rollout.mirror.write_records``). At most ``max_buffer`` records wait
in memory: beyond, and for a store that stays unreachable, they are dropped and counted. Records of
requests still in flight when the server stops are lost; the buffered ones are written at ``stop``.

Counted in ``kfloop_transformer_mirrored_total{model_name, version, result}``: ``mirrored`` (the
candidate answered below 500; recorded), ``failed`` (no answer in time, unreachable, or a 5xx;
recorded) and ``dropped`` (not sent: too many in flight; or not recorded: too many unwritten).
"""

from __future__ import annotations

import asyncio
import logging
import random
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

import orjson

from kfloop.errors import KfloopError
from kfloop.names import REQUEST_ID_HEADER
from kfloop.rollout.mirror import MirrorState, read_state, shadow_record, write_records
from kfloop.serving.model_servers import transformer_metrics as metrics
from kfloop.serving.model_servers.http_pool import HttpPool, UpstreamClosed, UpstreamUnreachable
from kfloop.store.objects import ObjectStore

logger = logging.getLogger(__name__)

CONTENT_HEADERS = ("content-type", "inference-header-content-length")


class TrafficMirror:
    """Mirrors a share of ``model``'s requests (POSTed to ``path`` on the candidate) as the mirror
    state on ``store`` says, and records the answers there."""

    def __init__(
        self,
        model: str,
        store: ObjectStore,
        path: str,
        *,
        poll_seconds: float = 5.0,
        flush_seconds: float = 2.0,
        max_in_flight: int = 64,
        timeout: float = 10.0,
        max_buffer: int = 10_000,
        rng: Callable[[], float] = random.random,
    ):
        self.model, self.store, self.path = model, store, path
        self.poll_seconds, self.flush_seconds, self.timeout = poll_seconds, flush_seconds, timeout
        self.max_in_flight, self.max_buffer, self.rng = max_in_flight, max_buffer, rng
        self.state: MirrorState | None = None
        self._tasks: set[asyncio.Task] = set()
        self._pool: HttpPool | None = None
        self._pool_url: str | None = None
        self._pending: list[tuple] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._poll_failed = False

    # -- the thread: state in, records out ----------------------------------------------------------

    def start(self) -> None:
        self.poll()
        self._thread = threading.Thread(target=self._run, name="kfloop-mirror", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        """Stop polling and write the buffered records (up to ``timeout``)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
        pool, self._pool = self._pool, None
        if pool is not None:
            try:
                asyncio.get_running_loop().create_task(pool.aclose())
            except RuntimeError:
                pass

    def _run(self) -> None:
        next_poll = time.monotonic() + self.poll_seconds
        while not self._stop.wait(min(self.flush_seconds, max(0.0, next_poll - time.monotonic()))):
            if time.monotonic() >= next_poll:
                self.poll()
                next_poll = time.monotonic() + self.poll_seconds
            self.flush()
        self.flush()

    def poll(self) -> MirrorState | None:
        """Read the mirror state; an unreadable one keeps the last (logged once until it reads again)."""
        try:
            state = read_state(self.store, self.model)
        except KfloopError as e:
            if not self._poll_failed:
                logger.warning("cannot read the mirror state of %s (%s); keeping the last one", self.model, e)
            self._poll_failed = True
            return self.state
        if self._poll_failed:
            logger.info("mirror state of %s readable again", self.model)
        self._poll_failed = False
        if state != self.state:
            if state is not None and state.percent > 0:
                logger.info(
                    "mirroring %d%% of %s to version %d at %s", state.percent, self.model, state.version, state.url
                )
            elif self.state is not None:
                logger.info("mirroring of %s stopped", self.model)
        self.state = state if state is not None and state.percent > 0 else None
        return self.state

    def flush(self) -> int:
        """Write the buffered records, one object per candidate version; returns how many were written."""
        with self._lock:
            pending, self._pending = self._pending, []
        if not pending:
            return 0
        by_version: dict[int, list[dict]] = {}
        for version, request_id, body, shadow, primary, when in pending:
            by_version.setdefault(version, []).append(
                shadow_record(self.model, request_id, self.path, body, shadow, primary, when)
            )
        written = 0
        for version, records in by_version.items():
            try:
                write_records(self.store, self.model, version, records)
                written += len(records)
            except KfloopError as e:
                logger.warning("could not write %d shadow records of %s: %s", len(records), self.model, e)
                keep = [p for p in pending if p[0] == version]
                with self._lock:
                    room = self.max_buffer - len(self._pending)
                    self._pending[:0] = keep[:room]
                if len(keep) > room:
                    metrics.MIRRORED.labels(self.model, str(version), "dropped").inc(len(keep) - max(room, 0))
        return written

    # -- the request path -------------------------------------------------------------------------

    def after_answer(
        self,
        body: Any,
        headers: Mapping[str, str],
        json_length: int | None,
        request_id: str,
        answer: Any,
        revision: str,
        version: str | None,
    ) -> bool:
        """Mirror this request (``body`` and ``headers`` as sent to the predictor) if it is picked;
        ``answer`` is the predictor's (a ``PredictorAnswer``: ``doc``, ``content``) as ``version`` of the
        transformer's ``revision``. Returns at once; whether it was sent."""
        state = self.state
        if state is None or self.rng() * 100 >= state.percent:
            return False
        if len(self._tasks) >= self.max_in_flight:
            metrics.MIRRORED.labels(self.model, str(state.version), "dropped").inc()
            return False
        task = asyncio.get_running_loop().create_task(
            self._send(state, body, headers, json_length, request_id, (answer, revision, version))
        )
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return True

    async def _send(self, state, body, headers, json_length, request_id, primary) -> None:
        content = body if isinstance(body, bytes) else orjson.dumps(body, option=orjson.OPT_SERIALIZE_NUMPY)
        sent = {"content-type": "application/json", **headers, REQUEST_ID_HEADER: request_id}
        if json_length is not None:
            sent["content-type"] = "application/octet-stream"
            sent["inference-header-content-length"] = str(json_length)
        start = time.perf_counter()
        try:
            response = await self._pool_for(state.url).post(self.path, content, sent, self.timeout)
            shadow = {
                "version": state.version,
                "status": response.status,
                "latency_ms": round((time.perf_counter() - start) * 1000, 3),
                "response": response.body,
            }
            result = "failed" if response.status >= 500 else "mirrored"
        except (asyncio.TimeoutError, UpstreamUnreachable, UpstreamClosed, OSError, ValueError) as e:
            shadow = {"version": state.version, "error": f"{type(e).__name__}: {e}" if str(e) else type(e).__name__}
            result = "failed"
        answer, revision, version = primary
        content_back = answer.content if answer.content is not None else orjson.dumps(answer.doc)
        primary = {"revision": revision, "version": version, "status": 200, "response": content_back}
        with self._lock:
            full = len(self._pending) >= self.max_buffer
            if not full:
                self._pending.append((state.version, request_id, content, shadow, primary, time.time()))
        metrics.MIRRORED.labels(self.model, str(state.version), "dropped" if full else result).inc()

    def _pool_for(self, url: str) -> HttpPool:
        if self._pool is None or self._pool_url != url:
            old, self._pool, self._pool_url = self._pool, HttpPool(url, self.max_in_flight, min(self.timeout, 5.0)), url
            if old is not None:
                asyncio.get_running_loop().create_task(old.aclose())
        return self._pool

    @property
    def in_flight(self) -> int:
        return len(self._tasks)
