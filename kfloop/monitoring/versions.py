"""Drift monitoring per answering model version.

A rollout changes the predictor behind a transformer (a canary, a promotion) without restarting the
transformer, so the version that answers a request is known only from the predictor's answer. Each
version is checked against its own feature schema and drift reference: ``VersionedDrift`` keeps one
``DriftMonitor`` (its own windows, its own event context) per version, for at most ``max_versions``
versions (the least recently served one is retired: its queued rows checked, its monitor stopped,
its counts kept).

A version's reference (``VersionReference``: schema and detector, from its verified bundle) is loaded
by a background thread, never on the request path: ``submit`` for a version not loaded yet asks for
it and counts the rows in ``rows_unreferenced`` (served, not drift-checked); a version whose load
failed is asked for again after ``retry_s``. Rows are decoded by the transformer with the schema it
started with; a version with another schema gets them decoded again with its own (``redecode``);
rows its schema rejects are counted in ``rows_unreferenced`` too.

The counters and gauges a ``DriftMonitor`` has (``rows_submitted``, ``windows_checked``, ...) are
summed over the versions, retired ones included, so the metrics read a ``VersionedDrift`` as one
monitor (``signal_windows`` and ``violations`` too; ``last_signals`` are the version served last's).

A reference also holds the version's baseline constraints (``kfloop.monitoring.constraints``; None
for a bundle without them: its data-quality and prediction-drift signals are absent); a bundle whose
constraint files do not match its schema fails to load, with the reason in the log.
"""

from __future__ import annotations

import collections
import dataclasses
import logging
import threading
import time
from collections.abc import Callable
from pathlib import Path

from kfloop.errors import ConfigError, KfloopError
from kfloop.inference.requests import Decoded, RequestDecoder
from kfloop.monitoring.constraints import Baseline, load_baseline
from kfloop.monitoring.drift import DriftDetector, load_detector
from kfloop.monitoring.drift_monitor import DriftMonitor
from kfloop.retry import Throttle
from kfloop.schema import FeatureSchema
from kfloop.store.bundle import DRIFT_DIR, load_schema, verify_bundle

log = logging.getLogger(__name__)

DEFAULT_MAX_VERSIONS = 4
DEFAULT_RETRY_S = 30.0
_SUMMED = (
    "rows_submitted",
    "rows_checked",
    "rows_dropped",
    "rows_skipped",
    "windows_checked",
    "drift_detected",
    "errors",
    "check_cpu_s",
)


@dataclasses.dataclass(frozen=True)
class VersionReference:
    """What one version is checked against: its feature schema, its drift detector and its baseline
    constraints (None: an older bundle without them)."""

    version: str
    schema: FeatureSchema
    detector: DriftDetector
    baseline: Baseline | None = None


def load_reference(bundle_dir: str | Path, version: str, backend: str | None = None) -> VersionReference:
    """The reference of the bundle in ``bundle_dir`` (verified against its manifest first)."""
    bundle_dir = Path(bundle_dir)
    verify_bundle(bundle_dir)
    schema = load_schema(bundle_dir)
    return VersionReference(
        str(version),
        schema,
        load_detector(bundle_dir / DRIFT_DIR, backend=backend),
        load_baseline(bundle_dir / DRIFT_DIR, schema),
    )


class _Entry:
    def __init__(self, reference: VersionReference, monitor: DriftMonitor, same_schema: bool, max_batch: int):
        self.reference, self.monitor, self.same_schema = reference, monitor, same_schema
        self.decoder = None if same_schema else RequestDecoder(reference.schema, max_batch)


class VersionedDrift:
    """A ``DriftMonitor`` per answering version, against that version's reference.

    ``load(version)`` returns the version's ``VersionReference`` (it may block: it runs on the loader
    thread); ``make_monitor(reference)`` builds the version's monitor (its event context names the
    version). ``schema`` is the one the transformer decodes requests with.
    """

    def __init__(
        self,
        schema: FeatureSchema,
        load: Callable[[str], VersionReference],
        make_monitor: Callable[[VersionReference], DriftMonitor],
        *,
        max_versions: int = DEFAULT_MAX_VERSIONS,
        retry_s: float = DEFAULT_RETRY_S,
        max_batch: int = 10_000,
        stop_timeout_s: float = 5.0,
    ):
        if max_versions < 1:
            raise ConfigError(f"drift max_versions must be at least 1, got {max_versions}")
        self.schema, self._load, self._make_monitor = schema, load, make_monitor
        self.max_versions, self.retry_s, self.max_batch = max_versions, retry_s, max_batch
        self.stop_timeout_s = stop_timeout_s
        self.rows_unreferenced = 0
        self.versions_loaded = self.versions_retired = self.load_errors = 0
        self._retired = dict.fromkeys(_SUMMED, 0)
        self._retired_counts = {"signal_windows": collections.Counter(), "violations": collections.Counter()}
        self._entries: collections.OrderedDict[str, _Entry] = collections.OrderedDict()
        self._failed: dict[str, float] = {}  # version -> time.monotonic() of its last failed load
        self._wanted: collections.deque[str] = collections.deque()
        self._asked: set[str] = set()
        self._last: _Entry | None = None
        self._lock = threading.Lock()
        self._wake = threading.Condition(self._lock)
        self._stopping = False
        self._error_log = Throttle(30.0)
        self._thread = threading.Thread(target=self._run, name="drift-references", daemon=True)
        self._thread.start()

    # -- the request path ----------------------------------------------------------------------

    def submit(
        self,
        version: str,
        decoded: Decoded,
        redecode: Callable[[RequestDecoder], Decoded],
        predictions=None,
        unseen_rows: list[dict] | None = None,
    ) -> bool:
        """Queue one request's rows (and its ``predictions`` and per-row ``unseen_rows`` categories,
        for the quality checks) for the monitor of ``version``; False when they are not checked
        (reference not loaded yet, rows its schema rejects, or the monitor's queue full)."""
        version = str(version)
        entry = self._entries.get(version)
        if entry is None:
            self.rows_unreferenced += decoded.n_rows
            self._ask(version)
            return False
        self._last = entry
        X, unseen = decoded.X, (unseen_rows if unseen_rows is not None and decoded.unseen else decoded.unseen)
        if not entry.same_schema:
            try:
                redecoded = redecode(entry.decoder)
                X, unseen = redecoded.X, redecoded.unseen
            except KfloopError as e:
                self.rows_unreferenced += decoded.n_rows
                if self._error_log.ready():
                    log.warning("rows answered by version %s do not fit its schema, not drift-checked: %s", version, e)
                return False
        with self._lock:
            if version in self._entries:
                self._entries.move_to_end(version)
        return entry.monitor.submit(X, predictions, unseen)

    def _ask(self, version: str) -> None:
        with self._lock:
            if self._stopping or version in self._asked or version in self._entries:
                return
            failed = self._failed.get(version)
            if failed is not None and time.monotonic() - failed < self.retry_s:
                return
            self._asked.add(version)
            self._wanted.append(version)
            self._wake.notify()

    # -- loading -------------------------------------------------------------------------------

    def add(self, reference: VersionReference) -> None:
        """Monitor ``reference.version`` from now on (the transformer's own version, loaded at start)."""
        entry = _Entry(reference, self._make_monitor(reference), reference.schema == self.schema, self.max_batch)
        retire = []
        with self._lock:
            old = self._entries.pop(reference.version, None)
            if old is not None:
                retire.append(old)
            self._entries[reference.version] = entry
            while len(self._entries) > self.max_versions:
                retire.append(self._entries.popitem(last=False)[1])
            self.versions_loaded += 1
        for e in retire:
            self._retire(e)

    def _run(self) -> None:
        while True:
            with self._wake:
                self._wake.wait_for(lambda: self._stopping or self._wanted)
                if self._stopping:
                    return
                version = self._wanted.popleft()
            try:
                reference = self._load(version)
                if reference.version != version:
                    reference = dataclasses.replace(reference, version=version)
                self.add(reference)
                self._failed.pop(version, None)
                log.info("drift reference of version %s loaded: %d features", version, len(reference.schema.features))
            except Exception as e:
                self.load_errors += 1
                self._failed[version] = time.monotonic()
                log.warning(
                    "could not load the drift reference of version %s (rows it answers are not drift-checked; "
                    "retrying in %gs): %s",
                    version,
                    self.retry_s,
                    e,
                )
            finally:
                with self._lock:
                    self._asked.discard(version)

    def _retire(self, entry: _Entry) -> None:
        entry.monitor.stop(self.stop_timeout_s)
        for name in _SUMMED:
            self._retired[name] += getattr(entry.monitor, name)
        for name, counts in self._retired_counts.items():
            counts.update(getattr(entry.monitor, name))
        self.versions_retired += 1
        if self._last is entry:
            self._last = None
        log.info(
            "drift monitor of version %s retired (at most %d versions)", entry.reference.version, self.max_versions
        )

    def stop(self, timeout: float = 5.0) -> bool:
        """Stop loading, check what every version has queued, stop their monitors; True when all stopped."""
        with self._wake:
            self._stopping = True
            self._wake.notify_all()
        self._thread.join(timeout)
        with self._lock:
            entries = list(self._entries.values())
        return all([e.monitor.stop(timeout) for e in entries])

    # -- reading -------------------------------------------------------------------------------

    @property
    def versions(self) -> list[str]:
        """The versions monitored now, least recently served first."""
        return list(self._entries)

    def monitor(self, version: str) -> DriftMonitor | None:
        entry = self._entries.get(str(version))
        return entry.monitor if entry is not None else None

    def _sum(self, name: str) -> int:
        return self._retired.get(name, 0) + sum(getattr(e.monitor, name) for e in list(self._entries.values()))

    @property
    def pending_rows(self) -> int:
        return self._sum("pending_rows")

    @property
    def window_rows(self) -> int:
        return self._sum("window_rows")

    def _counts(self, name: str) -> collections.Counter:
        total = collections.Counter(self._retired_counts[name])
        for e in list(self._entries.values()):
            total.update(getattr(e.monitor, name))
        return total

    @property
    def signal_windows(self) -> collections.Counter:
        """Windows per (signal, status), over every version."""
        return self._counts("signal_windows")

    @property
    def violations(self) -> collections.Counter:
        """Violated data-quality checks per kind, over every version."""
        return self._counts("violations")

    @property
    def last_signals(self) -> dict:
        """The last data-quality and prediction-drift results of the version served last."""
        entry = self._last
        return dict(entry.monitor.last_signals) if entry is not None else {}

    @property
    def last_p_values(self) -> dict[str, float | None]:
        """The p-values of the last window of the version served last."""
        entry = self._last
        return entry.monitor.last_p_values if entry is not None else {}

    def __getattr__(self, name: str):
        if name in _SUMMED:
            return self._sum(name)
        raise AttributeError(name)
