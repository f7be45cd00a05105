"""Small helpers for background workers that retry: backoff delays and throttled warnings."""

from __future__ import annotations

import random
import time


def backoff_delay(attempt: int, base: float, cap: float, jitter: float = 0.2) -> float:
    """Seconds to wait before retry number ``attempt`` (1, 2, ...): ``base * 2**(attempt-1)``
    capped at ``cap``, then shortened by a random fraction up to ``jitter`` so that many
    workers failing together do not retry in lockstep."""
    delay = min(cap, base * 2 ** min(max(attempt - 1, 0), 62))
    return delay * (1.0 - jitter * random.random())


class Throttle:
    """Says yes at most once every ``interval_s`` seconds (to rate-limit log warnings)."""

    def __init__(self, interval_s: float):
        self.interval_s = interval_s
        self._last = float("-inf")

    def ready(self) -> bool:
        now = time.monotonic()
        if now - self._last >= self.interval_s:
            self._last = now
            return True
        return False
