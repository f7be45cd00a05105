"""The canary analysis controller with a real registry and event log on a LocalStore, an in-memory
rollout target that follows the gateway's routing rules (``RouteState``), and simulated traffic:
each poll serves a batch of requests split like the target's current state, with per-version
error rates, latencies and prediction distributions. Time is simulated too (clock and sleep)."""

from __future__ import annotations

import pytest

from kfloop.errors import RegistryError
from kfloop.names import ROLLOUT_DECISION
from kfloop.rollout.analysis import Thresholds, plan_for
from kfloop.rollout.controller import run_analysis
from kfloop.serving.local.routing import RouteState
from kfloop.store.event_log import read_events
from tests.fakes.rollout_target import GOOD, MODEL, Clock, MemoryTarget, SimulatedTraffic


def analyse(registry, behaviour, strategy="canary", target=None, rate=100, sink=None, **plan):
    target = target or MemoryTarget(stable=1)
    clock, lines = Clock(), []
    plan = plan_for(
        strategy,
        hold_requests=plan.pop("hold_requests", 200),
        poll_seconds=1.0,
        timeout_seconds=60,
        data_wait_seconds=3,
        **plan,
    )
    result = run_analysis(
        registry,
        target,
        SimulatedTraffic(target, behaviour, rate),
        MODEL,
        f"{MODEL}:2",
        plan,
        Thresholds(min_requests=50, min_predictions=100),
        registry.store,
        sink,
        clock=clock,
        sleep=clock.sleep,
        progress=lines.append,
    )
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
        (1, 10, "passed"),
        (2, 50, "passed"),
        (3, 100, "promoted"),
    ]
    assert [e["data"]["verdict"] for e in sink] == ["passed", "passed", "promoted"]
    first = decisions(registry)[0]
    assert first["canary_version"] == 2 and first["stable_version"] == 1
    assert first["stats"]["canary"]["requests"] >= 200 and first["stats"]["stable"]["requests"] >= 1800
    assert {c["metric"]: c["passed"] for c in first["metrics"]} == {
        "requests": True,
        "error_rate": True,
        "p99_latency_ms": True,
        "prediction_divergence": True,
        "quality": None,
    }
    v2, v1 = registry.get(MODEL, 2), registry.get(MODEL, 1)
    assert (v2.stage, v1.stage) == ("production", "archived")
    reasons = [h["reason"] for h in v2.stage_history]
    assert any("step 1/3 at 10% passed" in r for r in reasons) and "promoted" in reasons[-1]
    assert "prediction_divergence" in reasons[-1] and "quality skipped" in reasons[-1]
    assert any("step 1/3 at 10%: passed" in line for line in lines)


@pytest.mark.parametrize(
    "bad, failing",
    [
        ({**GOOD, "error_rate": 0.2}, "error_rate"),
        ({**GOOD, "p99": 80.0}, "p99_latency_ms"),
        ({**GOOD, "beta": (9, 1)}, "prediction_divergence"),
    ],
)
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
    assert (
        registry.get(MODEL, 2).stage == "production"
        and "promoted" in registry.get(MODEL, 2).stage_history[-1]["reason"]
    )

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
