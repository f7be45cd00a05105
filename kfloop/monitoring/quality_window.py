"""Windows of served rows for the data-quality and prediction-drift checks, in step with the drift windows.

``WindowedQuality`` is the companion of a ``WindowedDrift`` inside a ``DriftMonitor``: the request
path ``offer``s each accepted request's predictions (as the predictor answered them) and unseen
categories (per row, ``{feature: value}`` as ``capture_rows.unseen_by_row`` has them; or counts per
feature), in the order its rows were queued; the monitor's thread hands it the same rows it
hands the drift window (``add``), at most up to the end of the current window, so the two windows
hold the same rows. When a window fills it runs ``check_data_quality`` and
``check_prediction_drift`` (``kfloop.monitoring.data_quality``, ``prediction_drift``) and returns
their ``SignalResult``s. Per-row unseen categories go to the window of their row; counts per feature
(a version decoded with another schema) to the window that holds the request's first row; the
requests the transformer rejected (``rejected()``, a running total, read at each ``offer``) are
counted in the window that holds the first accepted request after them. A window some of whose rows
came without predictions gets no prediction-drift result (absent, not zero). Not thread-safe but for
``offer`` (a deque append, from the request path).
"""

from __future__ import annotations

import collections
import logging
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from kfloop.errors import ConfigError
from kfloop.monitoring.constraints import Baseline
from kfloop.monitoring.data_quality import check_data_quality
from kfloop.monitoring.prediction_drift import check_prediction_drift
from kfloop.monitoring.signals import SignalResult
from kfloop.retry import Throttle

log = logging.getLogger(__name__)

QUALITY_SIGNALS = ("data_quality", "prediction_drift")


class WindowedQuality:
    """Collects the rows, predictions and unseen counts of windows of ``window_size`` rows."""

    def __init__(self, baseline: Baseline, window_size: int, rejected: Callable[[], int] | None = None):
        if window_size < 1:
            raise ConfigError(f"quality window_size must be at least 1, got {window_size}")
        self.baseline, self.window_size = baseline, window_size
        self._rejected = rejected or (lambda: 0)
        self._rejected_seen = self._rejected()
        self._offered: collections.deque[tuple[int, Any, Any, int]] = collections.deque()
        self._head: tuple[int, Any, Any, int] | None = None
        self._rejected_at: int | None = None  # the running total when this window's last request came
        self._head_used = 0  # rows of the head request already in a window
        self._rows: list[np.ndarray] = []
        self._predictions: list | None = []
        self._unseen: collections.Counter[str] = collections.Counter()
        self._filled = 0
        self.windows_checked = 0
        self._shape_log = Throttle(60.0)

    @property
    def pending(self) -> int:
        return self._filled

    def offer(self, n_rows: int, predictions: Any, unseen: Mapping[str, int] | Sequence[Mapping] | None = None) -> None:
        """The predictions (one per row, or None) and unseen categories (per row, or counts per
        feature) of the next ``n_rows`` queued rows."""
        self._offered.append((n_rows, predictions, unseen, self._rejected()))

    def add(self, X: np.ndarray) -> list[SignalResult]:
        """The next rows (as offered, in order); the results of the window they complete, if any."""
        results, start = [], 0
        while start < len(X):
            take = min(self.window_size - self._filled, len(X) - start)
            self._rows.append(X[start : start + take])
            self._take_offered(take)
            self._filled += take
            start += take
            if self._filled == self.window_size:
                results.extend(self._check())
        return results

    def _take_offered(self, rows: int) -> None:
        # (a step per request: with one-row requests this loop was a quarter of a window's cost, so the
        # common case, a request taken whole with no unseen categories, does no slicing and no ABC check)
        offered, collected = self._offered, self._predictions
        while rows > 0:
            head = self._head
            if head is None:
                if not offered:  # rows without an offer: no predictions for this window
                    self._predictions = None
                    return
                head = self._head = offered.popleft()
                self._head_used = 0
                self._rejected_at = head[3]
                if head[2] and isinstance(head[2], Mapping):  # counts per feature: to the request's first window
                    self._unseen.update({k: int(v) for k, v in head[2].items()})
            n, predictions, unseen, _ = head
            used = self._head_used
            take = n - used if n - used <= rows else rows
            whole = used == 0 and take == n
            if unseen and not isinstance(unseen, Mapping):
                for row in unseen if whole else unseen[used : used + take]:
                    self._unseen.update(row.keys())
            if predictions is None or collected is None:
                self._predictions = collected = None
            else:
                collected.extend(predictions if whole else predictions[used : used + take])
            rows -= take
            if used + take >= n:
                self._head = None
            else:
                self._head_used = used + take

    def _check(self) -> list[SignalResult]:
        X = self._rows[0] if len(self._rows) == 1 else np.concatenate(self._rows)
        predictions, unseen = self._predictions, dict(self._unseen)
        total = self._rejected() if self._rejected_at is None else self._rejected_at
        rejected, self._rejected_seen = max(0, total - self._rejected_seen), max(total, self._rejected_seen)
        self._rejected_at = None if self._head is None else self._head[3]
        self._rows, self._predictions, self._unseen, self._filled = [], [], collections.Counter(), 0
        self.windows_checked += 1
        results = [check_data_quality(self.baseline, X, unseen, rejected)]
        if predictions is not None and len(predictions) == len(X):
            try:
                results.append(check_prediction_drift(self.baseline, predictions))
            except ConfigError as e:  # answers of another shape than the model's: no verdict on them
                if self._shape_log.ready():
                    log.warning("predictions not checked for drift: %s", e)
        return results
