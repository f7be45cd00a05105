"""Drift detection off the request path: served rows checked in windows on a background thread.

``DriftMonitor.submit`` hands one request's encoded rows to a bounded queue and returns at once;
when ``max_pending_rows`` rows are already waiting, the new rows are dropped and counted, so drift
detection never blocks or fails a request. One thread feeds the rows to a ``WindowedDrift`` and
turns every window whose result says ``is_drift`` into an ``io.kfloop.drift.detected`` CloudEvent,
appended to a durable ``Outbox`` (which delivers it to the sink). The event data is Alibi Detect's
envelope ``{"meta": ..., "data": {"is_drift", "p_val", "threshold", "distance", "p_val_by_feature",
"window_index", "window_size", "window_start", "window_end"}}`` plus the fields of ``context``
(model, version, where the captured rows are); a window starts when its first rows were submitted
and ends when it was checked. With a ``window_log`` every checked window, clean or drifted, also
gets a summary there (``kfloop.monitoring.window_log``), written in batches on this thread.
Counters for Prometheus: ``rows_submitted`` (queued), ``rows_checked``
(through the detection thread, results reported), ``rows_dropped``, ``rows_skipped``,
``windows_checked``, ``drift_detected``, ``errors``, ``check_cpu_s`` (CPU seconds the checks used);
``last_p_values`` holds the p-value of each feature in the last window and ``window_rows`` the rows
waiting for the current window to fill.

The thread is woken when the queued rows complete a window, not for every request (a wake-up per
request cost the transformer ~0.1 ms of CPU at one request at a time); otherwise it takes what is
queued every ``settle_s`` seconds, so the counters catch up with the traffic.

Checking a window costs milliseconds (Alibi's TabularDrift on 500 rows against a 10,000-row
reference: ~9 ms), so at high row rates the checks would take a whole core from serving.
``cpu_share`` bounds them as a budget: the checks earn ``cpu_share`` seconds of CPU per second of
wall time (up to ``burst_s`` seconds' worth saved while traffic is light) and spend what each check
uses of this thread's CPU (``time.thread_time()``, not wall time: on a busy machine a 2 ms check can
take 30 ms of wall time waiting for a core or the GIL). When a check leaves the budget in debt, the
monitor rests until it is paid back, and rows served while it rests are not checked (counted in
``rows_skipped``); the thread rests as well, so rows queued during a check wait, and over any ``T``
seconds the checks use at most ``cpu_share * (T + burst_s)`` plus one check. While the checks cost less
than the share, every row is checked. Windows stay whole and contiguous; at high traffic they become a
sample of it. With ``cpu_share=1`` every row is checked.

When no row came for ``settle_s``, the thread does the detector's work ahead for its window size
until a row comes (``WindowedDrift.prepare``: the scipy backend computes the KS p-values of likely
statistics, which otherwise made a new window's check cost several times a warm one), from the same
budget but only while more than half of it is left.

With a ``quality`` window (``kfloop.monitoring.quality_window``: the version's bundle has baseline
constraints), the same windows are also checked for data quality and prediction drift: ``submit``
takes the request's predictions and unseen-category counts too, and an alerting result becomes an
``io.kfloop.data_quality.violated`` or ``io.kfloop.prediction_drift.detected`` CloudEvent (data: the
``SignalResult`` with ``window_index`` and the ``context``). Counters: ``signal_windows`` (windows per
signal and status), ``violations`` (violated checks per kind); ``last_signals`` the last result per signal.
"""

from __future__ import annotations

import collections
import logging
import threading
import time
from collections.abc import Mapping

import numpy as np

from kfloop import timestamps
from kfloop.errors import ConfigError
from kfloop.events.cloudevents import REQUIRED, make_event
from kfloop.events.outbox import Outbox
from kfloop.monitoring.data_quality import CHECKS
from kfloop.monitoring.drift_window import WindowedDrift
from kfloop.monitoring.quality_window import QUALITY_SIGNALS, WindowedQuality
from kfloop.monitoring.signals import STATUSES, SignalResult
from kfloop.monitoring.window_log import WindowLog, window_summary
from kfloop.names import DRIFT_DETECTED
from kfloop.retry import Throttle

log = logging.getLogger(__name__)

DEFAULT_MAX_PENDING_ROWS = 50_000
DEFAULT_SETTLE_S = 0.25
DEFAULT_CPU_SHARE = 0.25
DEFAULT_BURST_S = 1.0  # the checks' unspent budget is kept for at most this many seconds' worth


class DriftMonitor:
    """Checks windows of submitted rows with ``windowed`` and reports drift to ``outbox``."""

    def __init__(
        self,
        windowed: WindowedDrift,
        outbox: Outbox,
        source: str,
        context: Mapping | None = None,
        *,
        max_pending_rows: int = DEFAULT_MAX_PENDING_ROWS,
        extensions: Mapping[str, str] | None = None,
        warn_interval_s: float = 30.0,
        settle_s: float = DEFAULT_SETTLE_S,
        cpu_share: float = DEFAULT_CPU_SHARE,
        burst_s: float = DEFAULT_BURST_S,
        quality: WindowedQuality | None = None,
        window_log: WindowLog | None = None,
    ):
        if max_pending_rows < 1:
            raise ConfigError(f"drift max_pending_rows must be at least 1, got {max_pending_rows}")
        if not 0 < cpu_share <= 1:
            raise ConfigError(f"drift cpu_share must be in (0, 1] (1: check every row), got {cpu_share}")
        self.windowed, self.outbox, self.source = windowed, outbox, source
        self.window_log = window_log  # a summary of every checked window (kfloop.monitoring.window_log)
        self._window_start = time.time()  # when the current window's first rows were submitted
        self.context = dict(context or {})
        self.extensions = _check_extensions(extensions or {})
        self.max_pending_rows = max_pending_rows
        self.cpu_share = cpu_share
        self.rows_submitted = self.rows_checked = self.rows_dropped = self.rows_skipped = 0
        self.windows_checked = self.drift_detected = self.errors = 0
        self.check_cpu_s = 0.0  # this thread's CPU in checks (the cap's measure)
        self.last_p_values: dict[str, float | None] = {}
        self.quality = quality
        # every key from the start (the metrics read these from another thread); empty without a baseline
        keys = ((s, st) for s in QUALITY_SIGNALS for st in STATUSES) if quality is not None else ()
        self.signal_windows: collections.Counter[tuple[str, str]] = collections.Counter(dict.fromkeys(keys, 0))
        self.violations: collections.Counter[str] = collections.Counter(
            dict.fromkeys(CHECKS if quality is not None else (), 0)
        )
        self.last_signals: dict[str, SignalResult] = {}
        self._queue: collections.deque[np.ndarray] = collections.deque()
        self._queued_at: collections.deque[float] = collections.deque()  # time.time() of each submit
        self._pending_rows = 0
        self._needed = windowed.window_size  # queued rows that complete the current window
        self._rest_until = 0.0  # time.monotonic() before which served rows are not checked
        self._budget = self._budget_max = cpu_share * burst_s  # CPU seconds the checks may still use
        self._budget_at = time.monotonic()  # when the budget was last brought up to date
        self.settle_s = settle_s
        self._cond = threading.Condition()
        self._stopping = False
        self._drop_log, self._error_log = Throttle(warn_interval_s), Throttle(warn_interval_s)
        self._thread = threading.Thread(target=self._run, name="drift-monitor", daemon=True)
        self._thread.start()

    @property
    def pending_rows(self) -> int:
        """Rows queued for the detection thread (not counting a partly filled window)."""
        return self._pending_rows

    @property
    def resting(self) -> bool:
        """Whether served rows are skipped now (the rest after a check, ``cpu_share``)."""
        return time.monotonic() < self._rest_until

    @property
    def window_rows(self) -> int:
        """Rows checked into the current, not yet full, window."""
        return self.windowed.pending

    def submit(self, X: np.ndarray, predictions=None, unseen=None) -> bool:
        """Queue the rows of one request (and, for the quality window, its predictions and unseen
        categories: per row, or counts per feature); False (and counted as dropped) when the queue is
        full. While the monitor rests (``cpu_share``) the rows are skipped: counted, not queued."""
        n = len(X)
        if self._rest_until and self.resting and not self._stopping:
            self.rows_skipped += n
            return True
        with self._cond:
            accepted = not self._stopping and self._pending_rows + n <= self.max_pending_rows
            if accepted:
                self._queue.append(X)
                self._queued_at.append(time.time())
                if self.quality is not None:
                    self.quality.offer(n, predictions, unseen)
                self._pending_rows += n
                self.rows_submitted += n
                if self._pending_rows >= self._needed:
                    self._cond.notify()
            else:
                self.rows_dropped += n
        if not accepted and self._drop_log.ready():
            log.warning(
                "drift queue full (%d rows waiting, limit %d): dropped %d rows (%d so far)",
                self._pending_rows,
                self.max_pending_rows,
                n,
                self.rows_dropped,
            )
        return accepted

    def stop(self, timeout: float = 5.0) -> bool:
        """Check what is queued (within ``timeout``), then stop the thread; True when it stopped.
        Rows of a window that is not full yet are not checked."""
        with self._cond:
            self._stopping = True
            self._cond.notify()
        self._thread.join(timeout)
        if self.window_log is not None:
            self.window_log.flush()
        if self.windowed.pending:
            log.info("drift monitor stopped with %d rows of an incomplete window unchecked", self.windowed.pending)
        return not self._thread.is_alive()

    def _run(self) -> None:
        preparing = True
        while (taken := self._take()) is not None:
            queued, queued_at = taken
            if self.window_log is not None:  # summaries waiting flush_interval_s are written, traffic or not
                self.window_log.tick()
            if not queued:
                if preparing:  # no row for settle_s: the detector's work ahead (``WindowedDrift.prepare``)
                    preparing = self._prepare()
                continue
            X = queued[0] if len(queued) == 1 else np.concatenate(queued)
            bounds = np.cumsum([len(q) for q in queued])
            start = 0
            while start < len(X):  # a window at a time: a failed check loses only its own window
                end = start + self.windowed.window_size - self.windowed.pending
                if self.windowed.pending == 0:  # a new window: its first rows' submit time
                    self._window_start = queued_at[min(int(np.searchsorted(bounds, start, "right")), len(bounds) - 1)]
                began = time.thread_time()  # this thread's CPU: the cap bounds CPU, not time waited for a core
                signals: list[SignalResult] = []
                if self.quality is not None:  # its windows are the drift windows: one summary holds both
                    try:
                        signals = self.quality.add(X[start:end])
                        for signal in signals:
                            self._report_signal(signal)
                    except Exception as e:
                        self._note_error("checking data quality and predictions", e)
                try:
                    for result in self.windowed.add(X[start:end]):
                        self._report(result, signals)
                        signals = []
                except Exception as e:  # a detector failure must not end the thread
                    self._note_error("checking drift", e)
                self.rows_checked += len(X[start:end])
                start = end
                used = time.thread_time() - began
                self.check_cpu_s += used
                if self.cpu_share < 1 and self._spend(used) < 0 and self.windowed.pending == 0:  # a window, in debt
                    self._rest_until = time.monotonic() - self._budget / self.cpu_share
                    with self._cond:  # the thread rests too: rows queued during the check wait (stop ends it)
                        self._cond.wait_for(
                            lambda: self._stopping or not self.resting, self._rest_until - time.monotonic()
                        )
            with self._cond:
                self._needed = self.windowed.window_size - self.windowed.pending

    def _prepare(self) -> bool:
        """The detector's work ahead, a step at a time while no row is queued and more than half the
        checks' budget is left (so windows still find the rest); its CPU is paid from the budget and
        counted in ``check_cpu_s``. Whether there is more to do."""
        while not self._stopping and self._pending_rows == 0:
            if self.cpu_share < 1 and self._spend(0.0) <= self._budget_max / 2:
                return True  # (the next idle settle_s goes on)
            began = time.thread_time()
            try:
                more = self.windowed.prepare()
            except Exception as e:  # noqa: BLE001 - the checks compute what they need themselves
                self._note_error("preparing the drift checks", e)
                more = False
            used = time.thread_time() - began
            self.check_cpu_s += used
            self._spend(used)
            if not more:
                return False
        return True

    def _spend(self, used: float) -> float:
        """Earn the budget since it was last brought up to date, spend ``used``; the budget left."""
        now = time.monotonic()
        earned = (now - self._budget_at) * self.cpu_share
        self._budget, self._budget_at = min(self._budget_max, self._budget + earned) - used, now
        return self._budget

    def _take(self) -> tuple[list[np.ndarray], list[float]] | None:
        """Everything queued, once it completes the current window, at stop, or after ``settle_s``
        (possibly nothing); None once stopping with nothing left."""
        with self._cond:
            self._cond.wait_for(lambda: self._stopping or self._pending_rows >= self._needed, self.settle_s)
            if self._stopping and not self._queue:
                return None
            queued, queued_at, self._pending_rows = list(self._queue), list(self._queued_at), 0
            self._queue.clear()
            self._queued_at.clear()
            return queued, queued_at

    def _report(self, result: dict, signals: list[SignalResult] = ()) -> None:
        data = result["data"]
        data["window_start"], data["window_end"] = timestamps.rfc3339(self._window_start), timestamps.rfc3339()
        self.windows_checked += 1
        self.last_p_values = dict(data["p_val_by_feature"])
        if self.window_log is not None:
            try:
                self.window_log.add(window_summary(result, self.context, signals))
            except Exception as e:  # a full disk must not end the thread
                self._note_error("recording the window summary", e)
        if not data["is_drift"]:
            log.debug("window %d: no drift (smallest p-value %s)", data["window_index"], _smallest(data["p_val"]))
            return
        self.drift_detected += 1
        drifted = sorted(k for k, p in data["p_val_by_feature"].items() if p is not None and p < data["threshold"])
        log.info(
            "window %d of %d rows drifted (features %s, threshold %.3g)",
            data["window_index"],
            data["window_size"],
            drifted,
            data["threshold"],
        )
        try:
            self.outbox.append(self.event(result))
        except Exception as e:  # a full disk must not end the thread; the next window tries again
            self._note_error("storing the drift event", e)

    def _report_signal(self, result: SignalResult) -> None:
        self.signal_windows[result.signal, result.status] += 1
        self.last_signals[result.signal] = result
        if result.signal == "data_quality":
            self.violations.update(v["check"] for v in result.evidence.get("violations", ()))
        if not result.alerting:
            return
        log.info(
            "window %d: %s alert (value %s, threshold %s)",
            self.quality.windows_checked - 1,
            result.signal,
            result.value,
            result.threshold,
        )
        try:
            self.outbox.append(self.signal_event(result))
        except Exception as e:
            self._note_error(f"storing the {result.signal} event", e)

    def signal_event(self, result: SignalResult) -> dict:
        """The CloudEvent of an alerting data-quality or prediction-drift result."""
        data = {**result.to_dict(), "window_index": self.quality.windows_checked - 1, **self.context}
        event = make_event(result.event_type, self.source, data, subject=self.context.get("model"))
        event.update(self.extensions)
        return event

    def event(self, result: dict) -> dict:
        """The ``io.kfloop.drift.detected`` CloudEvent for one window's result."""
        event = make_event(DRIFT_DETECTED, self.source, {**result, **self.context}, subject=self.context.get("model"))
        event.update(self.extensions)
        return event

    def _note_error(self, what: str, error: Exception) -> None:
        self.errors += 1
        if self._error_log.ready():
            log.error("drift monitor: %s failed (%d errors so far): %s", what, self.errors, error, exc_info=error)


def _check_extensions(extensions: Mapping[str, str]) -> dict[str, str]:
    """CloudEvent extension attributes (Knative's ``K_CE_OVERRIDES``); they may not replace required ones."""
    clash = sorted(set(extensions) & {*REQUIRED, "data", "time", "datacontenttype"})
    if clash:
        raise ConfigError(f"CloudEvent overrides may not set {clash}; only extension attributes")
    return {str(k): str(v) for k, v in extensions.items()}


def _smallest(p_vals: list) -> float | None:
    finite = [p for p in p_vals if p is not None]
    return min(finite) if finite else None
