"""An in-memory rollout target that follows the gateway's routing rules (``RouteState``), simulated
traffic (per-version error rates, latencies and prediction distributions) and a simulated clock."""

from __future__ import annotations

import numpy as np

from kfloop.rollout.analysis import RevisionStats
from kfloop.rollout.sources import Side
from kfloop.serving.local.routing import RouteState

MODEL = "churn"

GOOD = {"error_rate": 0.0, "p99": 10.0, "beta": (2, 2)}


class MemoryTarget:
    """A rollout target whose state changes like the local gateway's."""

    name = "memory"

    def __init__(self, stable: int | None):
        self.state = RouteState(MODEL, stable=stable)
        self.calls: list[tuple] = []

    def deploy(self, record, canary_percent):
        self.calls.append(("deploy", record.version, canary_percent))
        self.state = self.state.deployed(record.version, canary_percent)
        return self.status(MODEL)

    def promote(self, model):
        self.calls.append(("promote",))
        self.state = self.state.promoted()
        return self.status(model)

    def rollback(self, model):
        self.calls.append(("rollback",))
        self.state = self.state.rolled_back()
        return self.status(model)

    def shadow(self, model, version, percent, record=None):
        self.calls.append(("shadow", version, percent))
        self.state = self.state.shadowed(version, percent)
        return self.status(model)

    def status(self, model):
        s = self.state
        entry = lambda v, p: {"version": v, "percent": p} if v is not None else None  # noqa: E731
        return {
            "model": model,
            "target": self.name,
            "stable": entry(s.stable, 100 - s.canary_percent),
            "canary": entry(s.canary, s.canary_percent),
            "shadow": entry(s.shadow, s.shadow_percent),
        }


class SimulatedTraffic:
    """Serves ``rate`` requests per poll through ``target``'s split (mirrored copies to its shadow)."""

    name = "simulated"

    def __init__(self, target: MemoryTarget, behaviour: dict[int, dict], rate: int = 100, seed: int = 0):
        self.target, self.behaviour, self.rate = target, behaviour, rate
        self.rng = np.random.default_rng(seed)
        self.served: dict[int, list[tuple[bool, float, list]]] = {}

    def begin(self, model):
        return {v: len(rows) for v, rows in self.served.items()}

    def collect(self, model, stable: Side | None, canary: Side | None, mark):
        self._serve()
        return tuple(self._stats(side, mark) for side in (stable, canary))

    def _serve(self):
        s = self.target.state
        n_canary = round(self.rate * s.canary_percent / 100) if s.canary is not None else 0
        for version, n in ((s.stable, self.rate - n_canary), (s.canary, n_canary), (s.shadow, self.rate)):
            if version is not None and n:
                b = self.behaviour[version]
                p = self.rng.beta(*b["beta"], n)
                self.served.setdefault(version, []).extend(
                    (bool(self.rng.random() < b["error_rate"]), b["p99"], [1 - x, x]) for x in p
                )

    def _stats(self, side, mark):
        if side is None:
            return RevisionStats()
        rows = self.served.get(side.version, [])[mark.get(side.version, 0) :]
        return RevisionStats(
            side.version, len(rows), sum(r[0] for r in rows), rows[0][1] if rows else None, [r[2] for r in rows]
        )


class Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now

    def sleep(self, seconds):
        self.now += seconds
