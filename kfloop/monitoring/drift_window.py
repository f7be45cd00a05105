"""Windows of live requests for drift detection.

``WindowedDrift`` collects encoded rows as requests arrive and runs the detector once per
window of exactly ``window_size`` rows; rows past the last full window wait for the next call.
Rows are copied only into the partial-window buffer: a full window inside one batch is checked
in place (the detector's own preparation makes its one copy). Not thread-safe: one caller
(the transformer's detection thread) owns an instance.
"""

from __future__ import annotations

import numpy as np

from kfloop.errors import ConfigError, DataError
from kfloop.monitoring.drift import DriftDetector


class WindowedDrift:
    """Accumulates rows for ``detector`` and checks each completed window of ``window_size`` rows."""

    def __init__(self, detector: DriftDetector, window_size: int):
        if window_size < 1:
            raise ConfigError(f"drift window_size must be at least 1, got {window_size}")
        self.detector, self.window_size = detector, window_size
        self.feature_names = list(detector.feature_names)
        self._buffer = np.empty((window_size, len(self.feature_names)), dtype=np.float32)
        self._filled = 0
        self.windows_checked = 0
        steps = getattr(detector, "p_value_steps", None)  # the scipy backend's work ahead (``prepare``)
        self._preparing = steps(window_size) if steps is not None else None

    def prepare(self) -> bool:
        """One step of the detector's work ahead for windows of this size (the scipy backend computes the
        p-values of likely statistics); False once there is none left."""
        if self._preparing is None:
            return False
        if next(self._preparing, StopIteration) is StopIteration:
            self._preparing = None
            return False
        return True

    @property
    def pending(self) -> int:
        """Rows waiting for their window to fill."""
        return self._filled

    def add(self, X: np.ndarray) -> list[dict]:
        """Append rows; returns one drift result per window completed by them (often none)."""
        X = self._check(X)
        results, start = [], 0
        while start < len(X):
            if self._filled == 0 and len(X) - start >= self.window_size:
                window = X[start : start + self.window_size]
                start += self.window_size
            else:
                take = min(self.window_size - self._filled, len(X) - start)
                self._buffer[self._filled : self._filled + take] = X[start : start + take]
                self._filled += take
                start += take
                if self._filled < self.window_size:
                    break
                window, self._filled = self._buffer, 0
            results.append(self._detect(window))
        return results

    def _detect(self, window: np.ndarray) -> dict:
        result = self.detector.predict(window)
        data = result["data"]
        data["window_index"] = self.windows_checked
        data["window_size"] = self.window_size
        data["p_val_by_feature"] = dict(zip(self.feature_names, data["p_val"]))
        self.windows_checked += 1
        return result

    def _check(self, X: np.ndarray) -> np.ndarray:
        X = np.asarray(X, dtype=np.float32)
        if X.ndim == 1 and X.size == len(self.feature_names):
            X = X.reshape(1, -1)
        if X.ndim != 2 or X.shape[1] != len(self.feature_names):
            raise DataError(f"drift rows must be a [rows, {len(self.feature_names)}] matrix, got shape {X.shape}")
        return X
