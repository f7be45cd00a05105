"""Automatic rollouts of registered versions: claimed once, run in a background thread per model,
resumed after a stop; with the in-memory target and simulated traffic of the controller tests."""

from __future__ import annotations

import time

import pytest

from kfloop.errors import RegistryError
from kfloop.names import ROLLOUT_DECISION
from kfloop.rollout.analysis import Thresholds, plan_for
from kfloop.rollout.auto import AutoRollout
from kfloop.serving.local.routing import RouteState
from kfloop.store.event_log import read_events
from tests.conftest import wait_for
from tests.fakes.rollout_target import GOOD, MODEL, MemoryTarget, SimulatedTraffic

PLAN = plan_for("canary", steps=[20], hold_requests=100, poll_seconds=0.01, timeout_seconds=30, data_wait_seconds=0)


def auto(registry, target, traffic, sink=None) -> AutoRollout:
    return AutoRollout(
        registry.store,
        PLAN,
        Thresholds(min_requests=20, min_predictions=50),
        lambda: target,
        lambda target, model: traffic,
        sink,
    )


def wait_status(rollouts: AutoRollout, status: str, timeout: float = 20.0) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        records = rollouts.status(MODEL)
        if records and records[-1]["status"] == status:
            return records[-1]
        time.sleep(0.02)
    raise AssertionError(f"rollout not {status}: {rollouts.status(MODEL)}")


def test_a_registered_version_is_claimed_once_and_promoted_in_the_background(registry):  # noqa: F811
    target = MemoryTarget(stable=1)
    sink = []

    class Sink:
        append = sink.append

    rollouts = auto(registry, target, SimulatedTraffic(target, {1: GOOD, 2: GOOD}), Sink())
    assert rollouts.start(f"{MODEL}:2") is True
    assert rollouts.start(f"{MODEL}:2") is False
    record = wait_status(rollouts, "promoted")
    assert record["ref"] == f"{MODEL}:2" and record["strategy"] == "canary" and "passed" in record["reason"]
    assert target.state == RouteState(MODEL, stable=2) and registry.get(MODEL, 2).stage == "production"
    events = read_events(registry.store, MODEL, (ROLLOUT_DECISION,))
    assert [e["data"]["verdict"] for e in events] == ["passed", "promoted"]
    assert [e["id"] for e in sink] == [e["id"] for e in events]
    assert all(e["data"]["analysis_id"] == record["analysis_id"] for e in events)
    wait_for(lambda: rollouts.outcomes == {"promoted": 1})  # kfloop_trigger_rollouts_total{outcome}
    assert auto(registry, target, None).start(f"{MODEL}:2") is False  # another instance: still claimed


def test_an_analysis_stopped_midway_is_resumed_by_the_next_start_with_the_same_id(registry):  # noqa: F811
    target = MemoryTarget(stable=1)
    idle = SimulatedTraffic(target, {1: GOOD, 2: GOOD}, rate=0)  # no traffic: the step waits
    first = auto(registry, target, idle)
    first.start(f"{MODEL}:2")
    running = wait_status(first, "running")
    first.stop()
    assert first.status(MODEL)[-1]["status"] == "running" and target.state.canary == 2

    again = auto(registry, target, SimulatedTraffic(target, {1: GOOD, 2: GOOD}))
    assert again.resume() == [MODEL]
    done = wait_status(again, "promoted")
    assert done["analysis_id"] == running["analysis_id"] and target.state == RouteState(MODEL, stable=2)


def test_a_resumed_analysis_that_was_decided_already_is_closed_without_running(registry):  # noqa: F811
    target = MemoryTarget(stable=1)
    first = auto(registry, target, SimulatedTraffic(target, {1: GOOD, 2: GOOD}, rate=0))
    first.start(f"{MODEL}:2")
    wait_status(first, "running")
    first.stop()
    registry.set_stage(MODEL, 2, "rejected", reason="rolled back by hand")
    again = auto(registry, target, None)  # a source would fail: it must not be used
    again.resume()
    record = wait_status(again, "rolled-back")
    assert "decided before a restart" in record["reason"]
    wait_for(lambda: again.outcomes == {"rolled-back": 1})


def test_a_failing_analysis_is_recorded_as_failed(registry):  # noqa: F811
    rollouts = auto(registry, MemoryTarget(stable=None), None)
    rollouts.start(f"{MODEL}:2")
    record = wait_status(rollouts, "failed")
    assert "nothing serving" in record["reason"]


def test_claims_need_a_versioned_reference(registry):  # noqa: F811
    with pytest.raises(RegistryError, match="NAME:VERSION"):
        auto(registry, MemoryTarget(stable=1), None).start(f"{MODEL}:latest")
