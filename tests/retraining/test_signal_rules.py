"""One policy for all signals: per signal, alert only or retrain, its own threshold on the event's value
and its own count of consecutive windows; the defaults keep the drift and quality behaviour."""

from __future__ import annotations

import pytest

from kfloop.errors import ConfigError, InvalidRequest
from kfloop.events.cloudevents import make_event
from kfloop.names import DRIFT_DETECTED, QUALITY_DEGRADED, SIGNAL_EVENT_TYPES, SIGNALS
from kfloop.retraining.policy import (
    SIGNAL_TYPES,
    RetrainPolicy,
    SignalRule,
    TriggerState,
    decide,
    load_rules,
    parse_rule_flag,
    read_signal,
)


def signal_event(signal: str, window: int | None, value=None, status="alert", direction="below", **extra) -> dict:
    """An event of one of the new signals, as the monitoring job emits it (a SignalResult's fields)."""
    data = {"model": "churn", "model_version": "1", "revision": "stable", "status": status, "direction": direction}
    if window is not None:
        data["window_index"] = window
    if value is not None:
        data.update(value=value, threshold=0.8)
    data.update(extra)
    return make_event(SIGNAL_EVENT_TYPES[signal], "kfloop/monitor", data, subject="churn")


def drift(window: int, p: float = 1e-4) -> dict:
    inner = {"is_drift": 1, "p_val": [p, 0.5], "threshold": 0.025, "window_index": window}
    inner["p_val_by_feature"] = {"age": p, "plan": 0.5}
    return make_event(DRIFT_DETECTED, "kfloop/churn", {"data": inner, "model": "churn"}, subject="churn")


def feed(policy: RetrainPolicy, state: TriggerState, events: list[dict]) -> list[str]:
    actions = []
    for event in events:
        signal = read_signal(event)
        decision = decide(policy, state, signal, 1000.0)
        state.apply(signal, decision)
        actions.append(decision.action)
    return actions


def test_the_trigger_accepts_every_signal_type():
    assert set(SIGNAL_TYPES) >= set(SIGNAL_EVENT_TYPES.values())
    for signal in SIGNALS:
        assert read_signal(signal_event(signal, 0)).signal == signal


def test_defaults_keep_drift_after_two_windows_and_quality_at_once_the_rest_alert_only():
    policy = RetrainPolicy()
    rules = policy.to_dict()["rules"]
    assert rules["feature_drift"] == {"action": "retrain", "consecutive_windows": 2, "threshold": None}
    assert rules["quality"] == {"action": "retrain", "consecutive_windows": 1, "threshold": None}
    assert {s for s, r in rules.items() if r["action"] == "alert"} == set(SIGNALS) - {"feature_drift", "quality"}
    assert feed(policy, TriggerState("churn"), [drift(3), drift(4)]) == ["waiting", "start"]
    quality = make_event(QUALITY_DEGRADED, "kfloop/trigger", {"model": "churn", "metric": "accuracy", "value": 0.6})
    assert feed(policy, TriggerState("churn"), [quality]) == ["start"]


def test_an_alert_only_signal_is_recorded_with_its_evidence_and_starts_nothing():
    state = TriggerState("churn")
    event = signal_event("data_quality", 0, value=3, direction="above", evidence={"violations": ["age max"]})
    assert feed(RetrainPolicy(), state, [event, signal_event("data_quality", 1, value=4, direction="above")]) == [
        "alert",
        "alert",
    ]
    first = state.alerts[0]
    assert first["signal"] == "data_quality" and "alert only" in first["reason"]
    assert first["value"] == 3 and first["threshold"] == 0.8 and first["direction"] == "above"
    assert first["details"] == {"violations": ["age max"]} and state.in_flight is None
    assert state.streaks["data_quality"]["count"] == 2
    assert state.streak == 0  # the drift streak is its own


def test_a_signal_may_retrain_after_its_own_count_of_windows_on_its_own_threshold():
    rule = SignalRule("retrain", consecutive_windows=2, threshold=0.7)
    policy = RetrainPolicy(rules={"estimated_quality": rule})
    state = TriggerState("churn")
    events = [signal_event("estimated_quality", i, value=v) for i, v in enumerate([0.75, 0.65, 0.6])]
    # 0.75 < 0.8 (the event's threshold) but not < 0.7 (the policy's): no alert, the streak stays at 0
    assert feed(policy, state, events) == ["ignore", "waiting", "start"]
    decision = decide(policy, state, signal_event("estimated_quality", 9, value=0.5), 1000.0)
    assert decision.action == "waiting" and decision.streak == 1  # the start reset the streak


def test_a_gap_in_the_windows_or_a_clean_window_restarts_the_count():
    policy = RetrainPolicy(rules={"prediction_drift": SignalRule("retrain", 2)})
    events = [signal_event("prediction_drift", 0), signal_event("prediction_drift", 2)]
    assert feed(policy, TriggerState("churn"), events) == ["waiting", "waiting"]
    events = [signal_event("prediction_drift", 0), signal_event("prediction_drift", 1, status="ok")]
    events.append(signal_event("prediction_drift", 2))
    assert feed(policy, TriggerState("churn"), events) == ["waiting", "ignore", "waiting"]
    insufficient = signal_event("prediction_drift", 0, status="insufficient")
    assert feed(policy, TriggerState("churn"), [insufficient]) == ["ignore"]  # never a verdict


def test_a_drift_threshold_in_the_policy_is_applied_to_the_smallest_p_value():
    policy = RetrainPolicy(rules={"feature_drift": SignalRule("retrain", 1, threshold=1e-6)})
    assert feed(policy, TriggerState("churn"), [drift(0, p=1e-4)]) == ["ignore"]
    decision = decide(policy, TriggerState("churn"), drift(1, p=1e-9), 1000.0)
    assert decision.action == "start"
    assert decision.evidence["value"] == pytest.approx(1e-9) and decision.evidence["threshold"] == 1e-6
    assert decision.evidence["details"] == {"features": ["age"]}


def test_the_flag_and_the_file_give_the_same_rules(tmp_path):
    signal, rule = parse_rule_flag("estimated_quality=retrain,windows=3,threshold=0.7")
    assert (signal, rule) == ("estimated_quality", SignalRule("retrain", 3, 0.7))
    (tmp_path / "p.yaml").write_text(
        "signals:\n  estimated_quality: {action: retrain, consecutive_windows: 3, threshold: 0.7}\n"
    )
    (tmp_path / "p.json").write_text(
        '{"estimated_quality": {"action": "retrain", "consecutive_windows": 3, "threshold": 0.7}}'
    )
    assert load_rules(tmp_path / "p.yaml") == load_rules(tmp_path / "p.json") == {signal: rule}


@pytest.mark.parametrize(
    "text, message",
    [
        ("vibes=retrain", "unknown signal 'vibes'"),
        ("quality=panic", "signal action 'panic'"),
        ("quality=retrain,windows=0", "expected a whole number >= 1"),
        ("quality=retrain,windows=two", "is not a number"),
        ("quality=retrain,every=2", "is not windows=N or threshold=X"),
        ("quality", "expected SIGNAL=ACTION"),
    ],
)
def test_bad_rule_flags_are_refused_naming_the_problem(text, message):
    with pytest.raises(ConfigError, match=message):
        parse_rule_flag(text)


@pytest.mark.parametrize(
    "content, message",
    [
        ("signals: [1, 2]", "expected a mapping"),
        ("signals:\n  quality: {action: retrain, windows: 2}", "unknown keys \\['windows'\\]"),
        ("signals:\n  quality: {action: retrain, threshold: high}", "expected a finite number"),
        ("signals: {quality: [", "not valid YAML"),
    ],
)
def test_bad_policy_files_are_refused_naming_the_file(tmp_path, content, message):
    path = tmp_path / "policy.yaml"
    path.write_text(content)
    with pytest.raises(ConfigError, match=message):
        load_rules(path)
    with pytest.raises(ConfigError, match="cannot be read"):
        load_rules(tmp_path / "absent.yaml")


@pytest.mark.parametrize(
    "extra, message",
    [
        ({"status": "maybe"}, "status 'maybe'"),
        ({"direction": "sideways"}, "direction 'sideways'"),
        ({"value": "high"}, "value is 'high'"),
        ({"window_index": -1}, "window_index is -1"),
    ],
)
def test_malformed_signal_events_are_refused(extra, message):
    with pytest.raises(InvalidRequest, match=message):
        read_signal(signal_event("bias_drift", 0, **extra))
