"""The canary analysis controller with a real registry and event log on a LocalStore, an in-memory
rollout target that follows the gateway's routing rules (``RouteState``), and simulated traffic:
each poll serves a batch of requests split like the target's current state, with per-version
error rates, latencies and prediction distributions. Time is simulated too (clock and sleep)."""

from __future__ import annotations

import numpy as np
import pytest

from kfloop.canary_analysis import RevisionStats, Thresholds, plan_for
from kfloop.canary_controller import run_analysis
from kfloop.canary_sources import Side
from kfloop.errors import RegistryError
from kfloop.event_log import read_events
from kfloop.events import ROLLOUT_DECISION
from kfloop.registry import Registry
from kfloop.serving.routing import RouteState
from kfloop.storage import LocalStore
from tests.serving.conftest import build_bundle, churn_frame

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

    def shadow(self, model, version, percent):
        self.calls.append(("shadow", version, percent))
        self.state = self.state.shadowed(version, percent)
        return self.status(model)

    def status(self, model):
        s = self.state
        entry = lambda v, p: {"version": v, "percent": p} if v is not None else None  # noqa: E731
        return {"model": model, "target": self.name, "stable": entry(s.stable, 100 - s.canary_percent),
                "canary": entry(s.canary, s.canary_percent), "shadow": entry(s.shadow, s.shadow_percent)}


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
                    (bool(self.rng.random() < b["error_rate"]), b["p99"], [1 - x, x]) for x in p)

    def _stats(self, side, mark):
        if side is None:
            return RevisionStats()
        rows = self.served.get(side.version, [])[mark.get(side.version, 0):]
        return RevisionStats(side.version, len(rows), sum(r[0] for r in rows), rows[0][1] if rows else None,
                             [r[2] for r in rows])


class Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now

    def sleep(self, seconds):
        self.now += seconds


@pytest.fixture
def registry(tmp_path):
    registry = Registry(LocalStore(tmp_path / "home"))
    bundle, _, _ = build_bundle(tmp_path / "bundle", churn_frame(n=60), "churned")
    for _ in range(2):
        registry.register(MODEL, bundle)
    registry.set_stage(MODEL, 1, "production", reason="first")
    return registry


def analyse(registry, behaviour, strategy="canary", target=None, rate=100, sink=None, **plan):
    target = target or MemoryTarget(stable=1)
    clock, lines = Clock(), []
    plan = plan_for(strategy, hold_requests=plan.pop("hold_requests", 200), poll_seconds=1.0, timeout_seconds=60,
                    data_wait_seconds=3, **plan)
    result = run_analysis(registry, target, SimulatedTraffic(target, behaviour, rate), MODEL, f"{MODEL}:2", plan,
                          Thresholds(min_requests=50, min_predictions=100), registry.store, sink,
                          clock=clock, sleep=clock.sleep, progress=lines.append)
    return result, target, lines


def decisions(registry) -> list[dict]:
    return [e["data"] for e in read_events(registry.store, MODEL, (ROLLOUT_DECISION,))]


def test_a_good_canary_goes_through_every_step_and_is_promoted(registry):
    sink = []

    class Sink:
        append = sink.append

    result, target, lines = analyse(registry, {1: GOOD, 2: GOOD}, sink=Sink())
    assert result["outcome"] == "promoted" and target.state == RouteState(MODEL, stable=2)
    assert target.calls == [("deploy", 2, 10), ("deploy", 2, 50), ("promote",)]
    assert [(d["step"], d["percent"], d["verdict"]) for d in decisions(registry)] == [
        (1, 10, "passed"), (2, 50, "passed"), (3, 100, "promoted")]
    assert [e["data"]["verdict"] for e in sink] == ["passed", "passed", "promoted"]
    first = decisions(registry)[0]
    assert first["canary_version"] == 2 and first["stable_version"] == 1
    assert first["stats"]["canary"]["requests"] >= 200 and first["stats"]["stable"]["requests"] >= 1800
    assert {c["metric"]: c["passed"] for c in first["metrics"]} == {
        "requests": True, "error_rate": True, "p99_latency_ms": True, "prediction_divergence": True, "quality": None}
    v2, v1 = registry.get(MODEL, 2), registry.get(MODEL, 1)
    assert (v2.stage, v1.stage) == ("production", "archived")
    reasons = [h["reason"] for h in v2.stage_history]
    assert any("step 1/3 at 10% passed" in r for r in reasons) and "promoted" in reasons[-1]
    assert "prediction_divergence" in reasons[-1] and "quality skipped" in reasons[-1]
    assert any("step 1/3 at 10%: passed" in line for line in lines)


@pytest.mark.parametrize("bad, failing", [
    ({**GOOD, "error_rate": 0.2}, "error_rate"),
    ({**GOOD, "p99": 80.0}, "p99_latency_ms"),
    ({**GOOD, "beta": (9, 1)}, "prediction_divergence"),
])
def test_a_bad_canary_is_rolled_back_at_the_first_step_and_rejected_with_the_failed_check(registry, bad, failing):
    result, target, _ = analyse(registry, {1: GOOD, 2: bad})
    assert result["outcome"] == "rolled-back" and target.state == RouteState(MODEL, stable=1)
    assert target.calls == [("deploy", 2, 10), ("rollback",)]
    (decision,) = decisions(registry)
    assert (decision["step"], decision["percent"], decision["verdict"]) == (1, 10, "rolled-back")
    assert [c["metric"] for c in decision["metrics"] if c["passed"] is False] == [failing]
    v2 = registry.get(MODEL, 2)
    assert v2.stage == "rejected" and failing in v2.stage_history[-1]["reason"]
    assert registry.get(MODEL, 1).stage == "production"


def test_a_canary_without_traffic_is_rolled_back_for_not_enough_traffic_at_the_timeout(registry):
    result, target, _ = analyse(registry, {1: GOOD, 2: GOOD}, steps=[1], rate=20)  # 1% of 20 rounds to 0
    assert result["outcome"] == "rolled-back" and "not enough traffic" in result["reason"]
    assert registry.get(MODEL, 2).stage == "rejected"


def test_linear_steps_are_equal(registry):
    result, target, _ = analyse(registry, {1: GOOD, 2: GOOD}, strategy="linear", n_steps=4, hold_requests=100)
    assert result["outcome"] == "promoted"
    assert [c for c in target.calls if c[0] == "deploy"] == [("deploy", 2, 25), ("deploy", 2, 50), ("deploy", 2, 75)]


def test_blue_green_bakes_on_shadow_traffic_then_switches(registry):
    result, target, _ = analyse(registry, {1: GOOD, 2: GOOD}, strategy="blue-green")
    assert result["outcome"] == "promoted" and target.state == RouteState(MODEL, stable=2)
    assert target.calls == [("deploy", 2, 0), ("shadow", 2, 100), ("shadow", None, 0), ("promote",)]
    bake = decisions(registry)[0]
    assert bake["percent"] == 0 and bake["stats"]["canary"]["requests"] >= 200


def test_blue_green_failing_on_shadow_traffic_never_served_a_client(registry):
    result, target, _ = analyse(registry, {1: GOOD, 2: {**GOOD, "beta": (1, 9)}}, strategy="blue-green")
    assert result["outcome"] == "rolled-back" and target.state == RouteState(MODEL, stable=1)
    assert target.calls[-2:] == [("shadow", None, 0), ("rollback",)]


def test_all_at_once_measures_stable_first_and_redeploys_it_when_the_candidate_fails(registry):
    good, target, _ = analyse(registry, {1: GOOD, 2: GOOD}, strategy="all-at-once")
    assert good["outcome"] == "promoted" and target.calls == [("deploy", 2, None)]
    assert registry.get(MODEL, 2).stage == "production" and "promoted" in registry.get(MODEL, 2).stage_history[-1]["reason"]

    registry.set_stage(MODEL, 1, "production", reason="back for the next test")
    registry.set_stage(MODEL, 2, "staging", reason="again")
    bad, target, _ = analyse(registry, {1: GOOD, 2: {**GOOD, "error_rate": 0.5}}, strategy="all-at-once")
    assert bad["outcome"] == "rolled-back" and target.state == RouteState(MODEL, stable=1)
    assert target.calls == [("deploy", 2, None), ("deploy", 1, None)]
    assert (registry.get(MODEL, 1).stage, registry.get(MODEL, 2).stage) == ("production", "rejected")


def test_an_analysis_needs_a_stable_revision_and_no_other_canary(registry):
    with pytest.raises(RegistryError, match="nothing serving"):
        analyse(registry, {1: GOOD, 2: GOOD}, target=MemoryTarget(stable=None))
    other = MemoryTarget(stable=1)
    other.state = RouteState(MODEL, stable=1, canary=3, canary_percent=10)
    with pytest.raises(RegistryError, match="already has a canary"):
        analyse(registry, {1: GOOD, 2: GOOD}, target=other)
    with pytest.raises(RegistryError, match="already the stable"):
        analyse(registry, {2: GOOD}, target=MemoryTarget(stable=2))
