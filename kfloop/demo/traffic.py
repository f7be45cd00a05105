"""The demo's traffic: customers from ``kfloop.training.samples.churn`` sent to the gateway, and their labels.

``TrafficReplay`` sends V1 requests of ``rows_per_request`` rows at ``requests_per_second``
from a background thread, each with its own ``x-request-id`` (row ``i`` is captured as
``<id>:<i>``). What it sends is drawn from the current ``Phase``: the customers of the training
data (baseline), older ones (``age_shift``: data drift), or customers whose churn follows the
changed relationship (``concept_drift``). A second thread posts each request's true labels to
the trigger's ``/v1/feedback`` ``label_delay`` seconds later (the capture must be stored first;
a batch the trigger refuses because a capture is not stored yet is tried again). Both threads
keep counts, and the time and phase of every request, for the timeline and the benchmark.
"""

from __future__ import annotations

import collections
import dataclasses
import json
import logging
import threading
import time

import httpx

from kfloop.auth import TokenFile
from kfloop.names import MODEL_VERSION_HEADER, REQUEST_ID_HEADER, REVISION_HEADER
from kfloop.training.samples import churn

log = logging.getLogger(__name__)
CHUNK_ROWS = 1000
MAX_LABEL_ATTEMPTS = 8


@dataclasses.dataclass(frozen=True)
class Phase:
    """What the customers look like: ``age_shift`` years older, ``concept_drift`` in [0, 1]."""

    name: str
    age_shift: float = 0.0
    concept_drift: float = 0.0


@dataclasses.dataclass(frozen=True)
class Sent:
    """One request: when it was sent, its phase, its rows, and which revision answered (None: failed)."""

    time: float
    phase: str
    rows: int
    revision: str | None
    version: str | None


class Rows:
    """An endless supply of one phase's customers, in chunks of fresh seeds."""

    def __init__(self, phase: Phase, seed: int):
        self.phase, self.seed = phase, seed
        self.instances: list[dict] = []
        self.labels: list[int] = []

    def take(self, n: int) -> tuple[list[dict], list[int]]:
        if len(self.instances) < n:
            frame = churn(CHUNK_ROWS, self.seed, self.phase.age_shift, self.phase.concept_drift)
            self.seed += 7919  # the next chunk: other customers
            self.labels += frame.pop("churn").astype(int).tolist()
            self.instances += json.loads(frame.to_json(orient="records"))
        taken = self.instances[:n], self.labels[:n]
        del self.instances[:n], self.labels[:n]
        return taken


class TrafficReplay:
    """Requests to ``gateway_url`` for ``model`` and labels to ``feedback_url``, from two threads."""

    def __init__(
        self,
        gateway_url: str,
        feedback_url: str | None,
        model: str,
        *,
        seed: int = 0,
        rows_per_request: int = 5,
        requests_per_second: float = 20.0,
        label_delay: float = 3.0,
        label_every: float = 2.0,
        id_prefix: str = "demo",
        token_file=None,
    ):
        self.predict_url = f"{gateway_url.rstrip('/')}/v1/models/{model}:predict"
        self.feedback_url, self.model, self.seed = feedback_url, model, seed
        self.token = TokenFile(token_file)  # the trigger's feedback route wants the control token
        self.rows_per_request, self.interval = rows_per_request, 1.0 / requests_per_second
        self.label_delay, self.label_every, self.id_prefix = label_delay, label_every, id_prefix
        self.phase = Phase("baseline")
        self.sent: list[Sent] = []
        self.rows_sent = self.errors = self.labels_posted = self.label_failures = 0
        self.phase_started: dict[str, tuple[float, int]] = {}  # phase -> (time of its first request, rows before)
        self.answered = collections.Counter()  # (revision, version) -> requests
        self._pending: collections.deque = collections.deque()  # (due, labels, attempts)
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads = [
            threading.Thread(target=self._send_loop, name="demo-traffic", daemon=True),
            threading.Thread(target=self._label_loop, name="demo-labels", daemon=True),
        ]

    def start(self) -> None:
        for thread in self._threads:
            thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        for thread in self._threads:
            if thread.is_alive():
                thread.join(timeout)

    def set_phase(self, phase: Phase) -> None:
        """Send ``phase``'s customers from the next request on."""
        self.phase = phase

    def sent_since(self, since: float, until: float | None = None, phase: str | None = None) -> list[Sent]:
        with self._lock:
            return [
                s
                for s in self.sent
                if s.time >= since and (until is None or s.time < until) and (phase is None or s.phase == phase)
            ]

    # -- requests ------------------------------------------------------------------------------

    def _send_loop(self) -> None:
        sources: dict[str, Rows] = {}
        n, next_at = 0, time.monotonic()
        with httpx.Client(timeout=30.0, trust_env=False) as client:
            while not self._stop.is_set():
                phase = self.phase
                rows = sources.setdefault(phase.name, Rows(phase, self.seed + 1000 * (len(sources) + 1)))
                instances, labels = rows.take(self.rows_per_request)
                self._send(client, f"{self.id_prefix}-{n}", phase, instances, labels)
                n += 1
                next_at = max(next_at + self.interval, time.monotonic() - 1.0)  # no burst after a stall
                self._stop.wait(max(0.0, next_at - time.monotonic()))

    def _send(
        self, client: httpx.Client, request_id: str, phase: Phase, instances: list[dict], labels: list[int]
    ) -> None:
        now = time.time()
        with self._lock:
            self.phase_started.setdefault(phase.name, (now, self.rows_sent))
        revision = version = None
        try:
            response = client.post(
                self.predict_url, json={"instances": instances}, headers={REQUEST_ID_HEADER: request_id}
            )
            if response.status_code == 200:
                revision, version = (
                    response.headers.get(REVISION_HEADER),
                    response.headers.get(MODEL_VERSION_HEADER),
                )
        except httpx.HTTPError as e:
            log.debug("request %s failed: %s", request_id, e)
        with self._lock:
            self.sent.append(Sent(now, phase.name, len(instances), revision, version))
            if revision is None:
                self.errors += 1
                return
            self.rows_sent += len(instances)
            self.answered[(revision, version)] += 1
            batch = [{"request_id": f"{request_id}:{i}", "label": y} for i, y in enumerate(labels)]
            self._pending.append((now + self.label_delay, batch, 0))

    # -- labels --------------------------------------------------------------------------------

    def _label_loop(self) -> None:
        with httpx.Client(timeout=60.0, trust_env=False) as client:
            while not self._stop.wait(self.label_every):
                if self.feedback_url:
                    self._post_due(client)

    def _post_due(self, client: httpx.Client) -> None:
        due, now = [], time.time()
        with self._lock:
            while self._pending and self._pending[0][0] <= now:
                due.append(self._pending.popleft())
        if not due:
            return
        labels = [label for _, batch, _ in due for label in batch]
        try:
            body = {"model": self.model, "labels": labels}
            response = client.post(self.feedback_url, json=body, headers=self.token.headers())
            ok = response.status_code == 200
        except httpx.HTTPError:
            ok = False
        if ok:
            self.labels_posted += len(labels)
            return
        with self._lock:  # not stored yet (or the trigger is busy): try again on the next round
            for when, batch, attempts in reversed(due):
                if attempts + 1 < MAX_LABEL_ATTEMPTS:
                    self._pending.appendleft((when, batch, attempts + 1))
                else:
                    self.label_failures += len(batch)
