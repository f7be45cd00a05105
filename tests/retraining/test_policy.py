"""The retraining policy: idempotency, consecutive drifted windows, cooldown, one run in flight,
and the state kept on the object store across restarts."""

from __future__ import annotations

import pytest

from kfloop.errors import ConfigError, InvalidRequest
from kfloop.events.cloudevents import make_event
from kfloop.names import DATA_QUALITY_VIOLATED, DRIFT_DETECTED, FEEDBACK, PREDICTION_DRIFT_DETECTED, QUALITY_DEGRADED
from kfloop.retraining.policy import (
    MAX_PROCESSED,
    RetrainPolicy,
    TriggerState,
    decide,
    load_state,
    read_signal,
    save_state,
    stored_models,
)
from kfloop.retraining.run_state import RunInFlight
from kfloop.store.objects import LocalStore


def drift(
    window: int | None, is_drift: int = 1, source: str = "kfloop/churn", revision: str = "r1", id: str | None = None
) -> dict:
    inner = {"is_drift": is_drift, "p_val": [0.001], "threshold": 0.05}
    if window is not None:
        inner["window_index"] = window
    return make_event(
        DRIFT_DETECTED,
        source,
        {"meta": {}, "data": inner, "model": "churn", "revision": revision},
        subject="churn",
        id=id,
    )


def quality() -> dict:
    return make_event(QUALITY_DEGRADED, "kfloop/trigger", {"model": "churn", "metric": "auc", "value": 0.6})


def feed(policy: RetrainPolicy, state: TriggerState, events: list[dict], now: float = 1000.0) -> list[str]:
    """Decide each event in turn, recording the decisions; a start puts a run in flight."""
    actions = []
    for event in events:
        signal = read_signal(event)
        decision = decide(policy, state, signal, now)
        state.apply(signal, decision)
        if decision.action == "start":
            state.in_flight = RunInFlight.start(f"run-{event['id']}", event, decision.reason, now, "local", "combined")
        actions.append(decision.action)
    return actions


def test_the_same_event_twice_starts_one_run():
    policy, state = RetrainPolicy(consecutive_windows=1), TriggerState("churn")
    event = drift(0)
    assert decide(policy, state, event, 0.0).action == "start"  # a CloudEvent or its signal
    assert feed(policy, state, [event, event]) == ["start", "duplicate"]
    assert len(state.processed) == 1


def test_the_same_id_from_another_source_is_a_different_event():
    policy, state = RetrainPolicy(consecutive_windows=2), TriggerState("churn")
    first, second = drift(0, id="e1"), drift(1, id="e1", source="kfloop/other")
    assert feed(policy, state, [first, second]) == ["waiting", "waiting"]  # another stream: streak restarts


def test_consecutive_drifted_windows_start_a_run():
    policy, state = RetrainPolicy(consecutive_windows=3), TriggerState("churn")
    assert feed(policy, state, [drift(4), drift(5), drift(6)]) == ["waiting", "waiting", "start"]
    assert state.streak == 0  # a start uses up the streak


def test_non_consecutive_windows_restart_the_streak():
    policy, state = RetrainPolicy(consecutive_windows=2), TriggerState("churn")
    assert feed(policy, state, [drift(1), drift(3), drift(5)]) == ["waiting"] * 3
    assert state.streak == 1
    assert feed(policy, state, [drift(6)]) == ["start"]


def test_a_window_without_drift_resets_the_streak():
    policy, state = RetrainPolicy(consecutive_windows=2), TriggerState("churn")
    assert feed(policy, state, [drift(1), drift(2, is_drift=0), drift(3)]) == ["waiting", "ignore", "waiting"]


def test_windows_of_another_revision_do_not_continue_the_streak():
    policy, state = RetrainPolicy(consecutive_windows=2), TriggerState("churn")
    assert feed(policy, state, [drift(1, revision="a"), drift(2, revision="b")]) == ["waiting", "waiting"]
    assert feed(policy, state, [drift(3, revision="b")]) == ["start"]


def test_quality_degradation_starts_a_run_without_a_streak():
    policy, state = RetrainPolicy(consecutive_windows=5), TriggerState("churn")
    assert feed(policy, state, [quality()]) == ["start"]


def test_feedback_is_recorded_but_never_starts_a_run():
    policy, state = RetrainPolicy(consecutive_windows=1), TriggerState("churn")
    event = make_event(FEEDBACK, "client", {"model": "churn", "labels": []})
    assert feed(policy, state, [event, event]) == ["ignore", "duplicate"]


def test_data_quality_and_prediction_drift_alert_without_starting_a_run_or_breaking_a_streak():
    policy, state = RetrainPolicy(consecutive_windows=2), TriggerState("churn")
    alerts = [
        make_event(kind, "kfloop/churn", {"signal": "data_quality", "status": "alert", "model": "churn"})
        for kind in (DATA_QUALITY_VIOLATED, PREDICTION_DRIFT_DETECTED)
    ]
    assert feed(policy, state, [drift(0), *alerts, drift(1)]) == ["waiting", "alert", "alert", "start"]
    assert "alert only" in decide(policy, TriggerState("churn"), alerts[0], 0.0).reason


def test_only_one_run_in_flight_and_the_streak_is_kept_while_blocked():
    policy, state = RetrainPolicy(consecutive_windows=1, cooldown_seconds=0), TriggerState("churn")
    assert feed(policy, state, [drift(0), drift(1), quality()]) == ["start", "in_flight", "in_flight"]
    state.finish({"status": "succeeded"}, now=1000.0)
    assert feed(policy, state, [drift(2)]) == ["start"]


def test_cooldown_after_a_run_ends():
    policy, state = RetrainPolicy(consecutive_windows=1, cooldown_seconds=60), TriggerState("churn")
    state.finish({"status": "failed"}, now=1000.0)
    signal = read_signal(drift(0))
    decision = decide(policy, state, signal, now=1030.0)
    assert decision.action == "cooldown" and "30s left" in decision.reason
    assert decide(policy, state, signal, now=1060.0).action == "start"


def test_processed_keys_are_bounded():
    state = TriggerState("churn")
    policy = RetrainPolicy(consecutive_windows=10**6)
    first = drift(None)
    feed(policy, state, [first])
    for _i in range(3):
        signal = read_signal(drift(None))
        state.apply(signal, decide(policy, state, signal, 0.0), max_processed=3)
    assert len(state.processed) == 3
    assert not state.seen(read_signal(first).key)
    assert MAX_PROCESSED == 10_000


def test_state_survives_a_restart(tmp_path):
    store, policy = LocalStore(tmp_path), RetrainPolicy(consecutive_windows=2)
    state = load_state(store, "churn")
    event = drift(7)
    assert feed(policy, state, [event]) == ["waiting"]
    save_state(store, state)

    again = load_state(store, "churn")  # a restarted service
    assert again.to_dict() == state.to_dict()
    assert feed(policy, again, [event, drift(8)]) == ["duplicate", "start"]
    save_state(store, again)
    assert load_state(store, "churn").in_flight.name.startswith("run-")
    assert stored_models(store) == ["churn"]


@pytest.mark.parametrize(
    "change, message",
    [
        ({"type": "io.kfloop.other"}, "not handled"),
        ({"data": "text"}, "must be a JSON object"),
        ({"data": {"data": {"is_drift": 1}}, "subject": None}, "no valid model"),
        ({"data": {"model": "Bad_Name", "data": {"is_drift": 1}}}, "no valid model"),
        ({"data": {"model": "churn", "data": {"is_drift": "yes"}}}, "is_drift"),
        ({"data": {"model": "churn", "data": {"is_drift": 1, "window_index": -1}}}, "window_index"),
    ],
)
def test_malformed_events_are_rejected(change, message):
    event = {**drift(0), **change}
    with pytest.raises(InvalidRequest, match=message):
        read_signal(event)


@pytest.mark.parametrize(
    "kwargs", [{"consecutive_windows": 0}, {"cooldown_seconds": -1}, {"strategy": "everything"}, {"window_days": 0}]
)
def test_policy_validation(kwargs):
    with pytest.raises(ConfigError):
        RetrainPolicy(**kwargs)
