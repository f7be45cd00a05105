"""When to retrain: the trigger's policy over drift and quality events, and its per-model state.

A drift event (``io.kfloop.drift.detected``, Alibi Detect's envelope with ``window_index``) adds
to the model's *drift streak* when it continues the previous drifted window of the same stream
(same event source, revision and model version, next window index); a gap, another stream or a
window with ``is_drift`` 0 starts over. ``consecutive_windows`` drifted windows in a row start a
run. A quality event (``io.kfloop.quality.degraded``: the labelled traffic already fell below
its threshold over a whole window) starts a run at once. Either way at most one run per model
is in flight, none starts within ``cooldown_seconds`` of the last run's end, and an event seen
before (same source and id) is a duplicate: redelivery never starts a second run.

``decide`` is pure; ``TriggerState.apply`` records what it decided. The state, with its run in flight
(a ``kfloop.retraining.run_state.RunInFlight``), is a sealed JSON document on the object store
(``trigger/<model>/state.json``), so it survives restarts.
"""

from __future__ import annotations

import dataclasses

from kfloop.errors import ConfigError, InvalidRequest, ObjectNotFound, RegistryError
from kfloop.names import (
    DATA_QUALITY_VIOLATED,
    DRIFT_DETECTED,
    FEEDBACK,
    PREDICTION_DRIFT_DETECTED,
    QUALITY_DEGRADED,
    TRIGGER_PREFIX,
    trigger_state_key,
    validate_model_name,
)
from kfloop.retraining.run_state import RunInFlight
from kfloop.store.objects import ObjectStore, get_json, put_json

DATA_STRATEGIES = ("combined", "recent", "window")  # what a run trains on: kfloop.retraining.training_data
TUNING_CHOICES = ("reuse", "retune")  # a tuned version's parameters: kfloop.retraining.inputs.tuning_arguments
ACTIONS = ("ignore", "start", "duplicate", "cooldown", "in_flight", "waiting")
SIGNAL_TYPES = (DRIFT_DETECTED, QUALITY_DEGRADED, FEEDBACK)
# signals the transformer emits that only alert for now: accepted and recorded, never a run
ALERT_ONLY_TYPES = (DATA_QUALITY_VIOLATED, PREDICTION_DRIFT_DETECTED)
MAX_PROCESSED = 10_000
MAX_HISTORY = 20


@dataclasses.dataclass(frozen=True)
class RetrainPolicy:
    """How many drifted windows in a row start a run, the pause after a run, the data to train on, and
    whether a run reuses the current version's tuned parameters or tunes again (``tuning``)."""

    consecutive_windows: int = 2
    cooldown_seconds: float = 600
    strategy: str = "combined"
    window_days: int = 7
    pipeline_params: dict = dataclasses.field(default_factory=dict)
    tuning: str = "reuse"

    def __post_init__(self):
        if not isinstance(self.consecutive_windows, int) or self.consecutive_windows < 1:
            raise ConfigError(f"consecutive_windows is {self.consecutive_windows!r}: expected a whole number >= 1")
        if not self.cooldown_seconds >= 0:
            raise ConfigError(f"cooldown_seconds is {self.cooldown_seconds!r}: expected a number >= 0")
        if self.strategy not in DATA_STRATEGIES:
            raise ConfigError(f"retraining strategy {self.strategy!r} is not one of {DATA_STRATEGIES}")
        if not isinstance(self.window_days, int) or self.window_days < 1:
            raise ConfigError(f"window_days is {self.window_days!r}: expected a whole number >= 1")
        if self.tuning not in TUNING_CHOICES:
            raise ConfigError(f"tuning {self.tuning!r} is not one of {TUNING_CHOICES}")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


@dataclasses.dataclass(frozen=True)
class Signal:
    """What the policy needs from one event: its model, kind and (for drift) window."""

    key: str
    model: str
    type: str
    is_drift: bool = False
    window_index: int | None = None
    stream: str = ""


@dataclasses.dataclass(frozen=True)
class Decision:
    action: str
    reason: str
    streak: int = 0

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


@dataclasses.dataclass
class TriggerState:
    """One model's trigger state: events seen, drift streak, last run end, the run in flight."""

    model: str
    processed: list = dataclasses.field(default_factory=list)
    streak: int = 0
    stream: str | None = None
    last_window: int | None = None
    last_finished: float | None = None
    in_flight: RunInFlight | None = None
    history: list = dataclasses.field(default_factory=list)
    quality: dict = dataclasses.field(default_factory=dict)

    def __post_init__(self):
        self._seen = set(self.processed)

    def seen(self, key: str) -> bool:
        return key in self._seen

    def apply(self, signal: Signal, decision: Decision, max_processed: int = MAX_PROCESSED) -> None:
        """Record an event and the policy's decision (a duplicate changes nothing)."""
        if decision.action == "duplicate":
            return
        self.processed.append(signal.key)
        self._seen.add(signal.key)
        if len(self.processed) > max_processed:
            for old in self.processed[:-max_processed]:
                self._seen.discard(old)
            del self.processed[:-max_processed]
        if signal.type == DRIFT_DETECTED:
            self.streak = decision.streak
            self.stream, self.last_window = signal.stream, signal.window_index
        if decision.action == "start":
            self.streak, self.last_window = 0, None

    def finish(self, result: dict, now: float) -> None:
        """The in-flight run ended with ``result``; its end starts the cooldown."""
        self.history = (self.history + [result])[-MAX_HISTORY:]
        self.in_flight, self.last_finished = None, now

    def to_dict(self) -> dict:
        doc = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        doc["in_flight"] = self.in_flight.to_dict() if self.in_flight else None
        return doc

    @classmethod
    def from_dict(cls, doc: dict) -> TriggerState:
        names = {f.name for f in dataclasses.fields(cls)}
        fields = {k: v for k, v in doc.items() if k in names}
        if fields.get("in_flight") is not None:
            fields["in_flight"] = RunInFlight.from_dict(fields["in_flight"])
        return cls(**fields)


def state_key(model: str) -> str:
    return trigger_state_key(model)


def load_state(store: ObjectStore, model: str) -> TriggerState:
    """The stored state of ``model``, or a fresh one."""
    try:
        return TriggerState.from_dict(get_json(store, state_key(model)))
    except ObjectNotFound:
        return TriggerState(model)


def save_state(store: ObjectStore, state: TriggerState) -> None:
    put_json(store, state_key(state.model), state.to_dict())


def stored_models(store: ObjectStore) -> list[str]:
    """Models that have a stored trigger state."""
    return sorted({k.split("/")[1] for k in store.list(f"{TRIGGER_PREFIX}/") if k.endswith("/state.json")})


def read_signal(event: dict) -> Signal:
    """The policy's view of a CloudEvent; raises InvalidRequest for an unknown type or bad data."""
    kind = event.get("type")
    if kind not in SIGNAL_TYPES + ALERT_ONLY_TYPES:
        raise InvalidRequest(
            f"event type {kind!r} is not handled here: expected one of {SIGNAL_TYPES + ALERT_ONLY_TYPES}"
        )
    data = event.get("data")
    if not isinstance(data, dict):
        raise InvalidRequest(f"{kind} event {event['id']!r}: data must be a JSON object, got {type(data).__name__}")
    model = data.get("model") or event.get("subject")
    try:
        validate_model_name(model if isinstance(model, str) else "")
    except RegistryError as e:
        raise InvalidRequest(
            f"{kind} event {event['id']!r} names no valid model (data.model or subject): {e}"
        ) from None
    key = f"{event['source']}#{event['id']}"
    if kind != DRIFT_DETECTED:
        return Signal(key, model, kind)
    inner = data["data"] if isinstance(data.get("data"), dict) else data
    is_drift, window = inner.get("is_drift"), inner.get("window_index")
    if isinstance(is_drift, bool) or is_drift not in (0, 1):
        raise InvalidRequest(f"drift event {event['id']!r}: data.is_drift is {is_drift!r}, expected 0 or 1")
    if window is not None and (isinstance(window, bool) or not isinstance(window, int) or window < 0):
        raise InvalidRequest(f"drift event {event['id']!r}: window_index is {window!r}, expected a whole number >= 0")
    stream = "|".join(str(x) for x in (event["source"], data.get("revision") or "", data.get("model_version") or ""))
    return Signal(key, model, kind, bool(is_drift), window, stream)


def decide(policy: RetrainPolicy, state: TriggerState, signal: Signal | dict, now: float) -> Decision:
    """What to do about one event (a CloudEvent or its ``read_signal``), given the model's state;
    changes nothing."""
    if isinstance(signal, dict):
        signal = read_signal(signal)
    if state.seen(signal.key):
        return Decision("duplicate", f"event {signal.key} was already processed", state.streak)
    if signal.type == FEEDBACK:
        return Decision("ignore", "feedback labels are stored; quality checks decide on them", state.streak)
    if signal.type in ALERT_ONLY_TYPES:
        return Decision("ignore", f"{signal.type} is recorded and alerts; it does not start a run", state.streak)
    streak = 0
    if signal.type == DRIFT_DETECTED:
        if not signal.is_drift:
            return Decision("ignore", f"window {signal.window_index} did not drift: drift streak reset", 0)
        streak = _streak(state, signal)
        if streak < policy.consecutive_windows:
            return Decision("waiting", f"drift in {streak} of {policy.consecutive_windows} consecutive windows", streak)
        why = f"drift in {streak} consecutive windows"
    else:
        why = "model quality degraded"
    blocked = _blocked(policy, state, now)
    if blocked:
        return Decision(blocked[0], f"{why}, but {blocked[1]}", streak)
    return Decision("start", why, streak)


def _streak(state: TriggerState, signal: Signal) -> int:
    """The drift streak including this drifted window."""
    if signal.window_index is None:  # no window numbers: count every drifted window as the next one
        return state.streak + 1 if state.stream == signal.stream else 1
    continues = (
        state.streak > 0
        and state.stream == signal.stream
        and state.last_window is not None
        and signal.window_index == state.last_window + 1
    )
    return state.streak + 1 if continues else 1


def _blocked(policy: RetrainPolicy, state: TriggerState, now: float) -> tuple[str, str] | None:
    run = state.in_flight
    if run:
        return "in_flight", f"run {run.name} ({run.status.value}) is in flight since {run.started_iso}"
    if state.last_finished is not None and now - state.last_finished < policy.cooldown_seconds:
        left = policy.cooldown_seconds - (now - state.last_finished)
        return "cooldown", f"the last run ended {now - state.last_finished:.0f}s ago (cooldown {left:.0f}s left)"
    return None
