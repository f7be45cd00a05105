"""Per-revision request counters of the local gateway, for canary analysis.

For every (model, version) the gateway counts the requests it sent to that revision, those that
failed (HTTP 5xx, or no answer: refused, reset, timed out) and their latencies in a fixed-bucket
histogram (bucket bounds growing by 25% from 0.25 ms, so a quantile read from it is within about
12%). Counters only grow, like Prometheus counters: a reader takes two snapshots and subtracts
(``kfloop.rollout.stats.window_delta``), so any number of readers can share them and nothing is
reset. Observing is a few integer increments and one bisect, cheap enough for the proxy's hot path.
The admin status shows them as ``windows: {"<version>": {"requests", "errors", "latency_ms":
{"bounds", "counts"}}}`` (``counts[i]`` requests took at most ``bounds[i]`` ms and more than
the bound before; the last count is above the last bound).
"""

from __future__ import annotations

import bisect
import time

BOUNDS_MS = tuple(round(0.25 * 1.25**k, 4) for k in range(60))  # 0.25 ms ... ~163 s


class RevisionWindow:
    """Cumulative request, error and latency counts of one revision."""

    __slots__ = ("requests", "errors", "counts")

    def __init__(self):
        self.requests = self.errors = 0
        self.counts = [0] * (len(BOUNDS_MS) + 1)

    def observe(self, milliseconds: float, error: bool) -> None:
        self.requests += 1
        self.errors += error
        self.counts[bisect.bisect_left(BOUNDS_MS, milliseconds)] += 1

    def to_dict(self) -> dict:
        return {
            "requests": self.requests,
            "errors": self.errors,
            "latency_ms": {"bounds": list(BOUNDS_MS), "counts": list(self.counts)},
        }


class RevisionWindows:
    """The windows of every revision the gateway sent requests to, by (model, version)."""

    def __init__(self):
        self._windows: dict[tuple[str, int], RevisionWindow] = {}

    def observe(self, model: str, version: int, started: float, error: bool) -> None:
        """One request to ``version`` that started at ``started`` (``time.perf_counter()``)."""
        window = self._windows.get((model, version))
        if window is None:
            window = self._windows[(model, version)] = RevisionWindow()
        window.observe((time.perf_counter() - started) * 1000.0, error)

    def of_model(self, model: str) -> dict:
        return {str(version): w.to_dict() for (name, version), w in sorted(self._windows.items()) if name == model}
