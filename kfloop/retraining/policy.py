"""When to retrain: the trigger's policy over every monitoring signal, and its per-model state.

A drift event (``io.kfloop.drift.detected``, Alibi Detect's envelope with ``window_index``) adds
to the model's *drift streak* when it continues the previous drifted window of the same stream
(same event source, revision and model version, next window index); a gap, another stream or a
window with ``is_drift`` 0 starts over. ``consecutive_windows`` drifted windows in a row start a
run. A quality event (``io.kfloop.quality.degraded``: the labelled traffic already fell below
its threshold over a whole window) starts a run at once. Either way at most one run per model
is in flight, none starts within ``cooldown_seconds`` of the last run's end, and an event seen
before (same source and id) is a duplicate: redelivery never starts a second run.

**One policy for all signals.** Every monitoring signal (``kfloop.names.SIGNAL_EVENT_TYPES``: feature
drift, data quality, prediction/multivariate/attribution/bias drift, quality, estimated quality) has a
``SignalRule``: whether it only alerts (``alert``: the event and the decision are recorded, no run
starts) or may start a run (``retrain``), how many consecutive alerting windows of one stream it
takes, and optionally its own ``threshold``: where the event carries the signal's value (``value``,
with ``direction`` saying which side alerts), the rule's threshold decides instead of the event's.
Defaults keep the behaviour above: feature drift retrains after ``consecutive_windows`` (2) windows,
quality at once, every other signal alerts only. The events of the other signals carry the fields of a
``kfloop.monitoring.signals.SignalResult`` in their data (``status``, ``value``, ``threshold``,
``direction``, ``evidence``) with ``model``, ``model_version``, ``revision`` and ``window_index``.
Each decision carries its evidence (signal, value, threshold, streak, rule, the event's own evidence),
which goes into the run in flight and the ``io.kfloop.retrain.started`` event.

``decide`` is pure; ``TriggerState.apply`` records what it decided. The state, with its run in flight
(a ``kfloop.retraining.run_state.RunInFlight``), is a sealed JSON document on the object store
(``trigger/<model>/state.json``), so it survives restarts.
"""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path

from kfloop.errors import ConfigError, InvalidRequest, ObjectNotFound, RegistryError
from kfloop.names import (
    DRIFT_DETECTED,
    FEEDBACK,
    QUALITY_DEGRADED,
    SIGNAL_EVENT_TYPES,
    SIGNALS,
    TRIGGER_PREFIX,
    trigger_state_key,
    validate_model_name,
)
from kfloop.retraining.run_state import RunInFlight
from kfloop.store.objects import ObjectStore, get_json, put_json

DATA_STRATEGIES = ("combined", "recent", "window")  # what a run trains on: kfloop.retraining.training_data
TUNING_CHOICES = ("reuse", "retune")  # a tuned version's parameters: kfloop.retraining.inputs.tuning_arguments
ACTIONS = ("ignore", "start", "duplicate", "cooldown", "in_flight", "waiting", "alert")
SIGNAL_TYPES = (*SIGNAL_EVENT_TYPES.values(), FEEDBACK)
SIGNAL_OF_TYPE = {type_: signal for signal, type_ in SIGNAL_EVENT_TYPES.items()}
RULE_ACTIONS = ("retrain", "alert")  # what an alerting signal may do: start a run, or only be recorded
MAX_PROCESSED = 10_000
MAX_HISTORY = 20


@dataclasses.dataclass(frozen=True)
class SignalRule:
    """What one signal may do (``retrain`` or ``alert`` only), after how many consecutive alerting
    windows, and its own threshold on the event's value (None: the event's own verdict)."""

    action: str = "alert"
    consecutive_windows: int = 1
    threshold: float | None = None

    def __post_init__(self):
        if self.action not in RULE_ACTIONS:
            raise ConfigError(f"signal action {self.action!r} is not one of {RULE_ACTIONS}")
        if isinstance(self.consecutive_windows, bool) or not isinstance(self.consecutive_windows, int):
            raise ConfigError(f"consecutive windows {self.consecutive_windows!r}: expected a whole number >= 1")
        if self.consecutive_windows < 1:
            raise ConfigError(f"consecutive windows {self.consecutive_windows!r}: expected a whole number >= 1")
        if self.threshold is not None and (
            isinstance(self.threshold, bool)
            or not isinstance(self.threshold, (int, float))
            or not math.isfinite(self.threshold)
        ):
            raise ConfigError(f"signal threshold {self.threshold!r}: expected a finite number")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


DEFAULT_RULES = {"quality": SignalRule("retrain", 1)}  # feature_drift: RetrainPolicy.consecutive_windows


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
    rules: dict = dataclasses.field(default_factory=dict)  # signal -> SignalRule; the rest: defaults

    def __post_init__(self):
        unknown = sorted(set(self.rules) - set(SIGNALS))
        if unknown:
            raise ConfigError(f"policy rules for unknown signals {unknown}: expected some of {list(SIGNALS)}")
        for signal, rule in self.rules.items():
            if not isinstance(rule, SignalRule):
                raise ConfigError(f"the policy rule of {signal} is a {type(rule).__name__}, not a SignalRule")
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

    def rule(self, signal: str) -> SignalRule:
        """The rule of ``signal``: the configured one, else the default (feature drift: retrain after
        ``consecutive_windows``; quality: retrain at once; the rest: alert only)."""
        if signal in self.rules:
            return self.rules[signal]
        if signal == "feature_drift":
            return SignalRule("retrain", self.consecutive_windows)
        return DEFAULT_RULES.get(signal, SignalRule())

    def signal_rules(self) -> dict[str, SignalRule]:
        """Every signal's rule in effect."""
        return {signal: self.rule(signal) for signal in SIGNALS}

    def to_dict(self) -> dict:
        doc = dataclasses.asdict(self)
        doc["rules"] = {signal: rule.to_dict() for signal, rule in self.signal_rules().items()}
        return doc


def parse_rules(doc: object, where: str = "policy") -> dict[str, SignalRule]:
    """Rules from ``{"signals": {SIGNAL: {"action", "consecutive_windows", "threshold"}}}`` (or the inner
    mapping itself); ConfigError naming ``where`` and the bad entry otherwise."""
    if isinstance(doc, dict) and "signals" in doc:
        doc = doc["signals"]
    if not isinstance(doc, dict):
        raise ConfigError(f"{where}: expected a mapping of signal names to rules, got {type(doc).__name__}")
    rules = {}
    for signal, entry in doc.items():
        if signal not in SIGNALS:
            raise ConfigError(f"{where}: unknown signal {signal!r}: expected one of {list(SIGNALS)}")
        if not isinstance(entry, dict):
            raise ConfigError(f"{where}: the rule of {signal} must be a mapping, got {type(entry).__name__}")
        unknown = sorted(set(entry) - {"action", "consecutive_windows", "threshold"})
        if unknown:
            raise ConfigError(f"{where}: the rule of {signal} has unknown keys {unknown}")
        try:
            rules[signal] = SignalRule(**entry)
        except ConfigError as e:
            raise ConfigError(f"{where}: {signal}: {e}") from None
    return rules


def load_rules(path: str | Path) -> dict[str, SignalRule]:
    """The rules of a policy file (JSON, or YAML when PyYAML reads it): see ``parse_rules``."""
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as e:
        raise ConfigError(f"policy file {path} cannot be read: {e.strerror or e}") from None
    try:
        doc = json.loads(text) if path.suffix == ".json" else _yaml(text)
    except ValueError as e:
        raise ConfigError(
            f"policy file {path} is not valid {'JSON' if path.suffix == '.json' else 'YAML'}: {e}"
        ) from None
    return parse_rules(doc, f"policy file {path}")


def _yaml(text: str) -> object:
    import yaml

    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise ValueError(str(e).replace("\n", " ")) from None


def parse_rule_flag(text: str) -> tuple[str, SignalRule]:
    """``SIGNAL=ACTION[,windows=N][,threshold=X]`` (the trigger's ``--signal_rule``) as a rule."""
    signal, sep, rest = text.partition("=")
    parts = [p.strip() for p in rest.split(",")] if sep else []
    if not sep or not parts or not parts[0]:
        raise ConfigError(f"signal rule {text!r}: expected SIGNAL=ACTION[,windows=N][,threshold=X]")
    entry: dict = {"action": parts[0]}
    for part in parts[1:]:
        key, eq, value = part.partition("=")
        field = {"windows": "consecutive_windows", "threshold": "threshold"}.get(key.strip())
        if not eq or field is None:
            raise ConfigError(f"signal rule {text!r}: {part!r} is not windows=N or threshold=X")
        try:
            entry[field] = int(value) if field == "consecutive_windows" else float(value)
        except ValueError:
            raise ConfigError(f"signal rule {text!r}: {part!r} is not a number") from None
    return signal.strip(), parse_rules({signal.strip(): entry}, "--signal_rule")[signal.strip()]


@dataclasses.dataclass(frozen=True)
class Signal:
    """What the policy needs from one event: its model, kind, signal, verdict, value and window."""

    key: str
    model: str
    type: str
    is_drift: bool = False  # the event's own verdict: the window alerted
    window_index: int | None = None
    stream: str = ""
    signal: str = ""  # kfloop.names.SIGNALS, "" for feedback
    value: float | None = None
    threshold: float | None = None
    direction: str = "below"
    evidence: dict = dataclasses.field(default_factory=dict)

    def alerting(self, rule: SignalRule) -> bool:
        """Whether this window alerts under ``rule``: its threshold on the value, else the event's verdict."""
        if rule.threshold is not None and self.value is not None:
            return self.value > rule.threshold if self.direction == "above" else self.value < rule.threshold
        return self.is_drift


@dataclasses.dataclass(frozen=True)
class Decision:
    action: str
    reason: str
    streak: int = 0
    signal: str = ""
    evidence: dict = dataclasses.field(default_factory=dict)

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
    streaks: dict = dataclasses.field(default_factory=dict)  # signal -> {count, stream, last_window} (not drift)
    alerts: list = dataclasses.field(default_factory=list)  # the last alert-only decisions, with their evidence

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
        elif signal.signal:
            self.streaks[signal.signal] = {
                "count": decision.streak,
                "stream": signal.stream,
                "last_window": signal.window_index,
            }
        if decision.action == "alert":
            entry = {"event": signal.key, "signal": signal.signal, "reason": decision.reason, **decision.evidence}
            self.alerts = (self.alerts + [entry])[-MAX_HISTORY:]
        if decision.action == "start":
            self.streak, self.last_window = 0, None
            self.streaks.pop(signal.signal, None)

    def finish(self, result: dict, now: float) -> None:
        """The in-flight run ended with ``result``; its end starts the cooldown."""
        self.history = (self.history + [result])[-MAX_HISTORY:]
        self.in_flight, self.last_finished = None, now

    def to_dict(self) -> dict:
        doc = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        doc["in_flight"] = self.in_flight.to_dict() if self.in_flight else None
        for name in ("streaks", "alerts"):  # added with the per-signal policy: stored once used
            if not doc[name]:
                del doc[name]
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
    if kind not in SIGNAL_TYPES:
        raise InvalidRequest(f"event type {kind!r} is not handled here: expected one of {SIGNAL_TYPES}")
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
    if kind == FEEDBACK:
        return Signal(key, model, kind)
    signal = SIGNAL_OF_TYPE[kind]
    inner = data["data"] if kind == DRIFT_DETECTED and isinstance(data.get("data"), dict) else data
    window = inner.get("window_index")
    if window is not None and (isinstance(window, bool) or not isinstance(window, int) or window < 0):
        raise InvalidRequest(
            f"{signal} event {event['id']!r}: window_index is {window!r}, expected a whole number >= 0"
        )
    stream = "|".join(str(x) for x in (event["source"], data.get("revision") or "", data.get("model_version") or ""))
    if kind == DRIFT_DETECTED and ("is_drift" in inner or "status" not in data):  # Alibi's envelope
        is_drift = inner.get("is_drift")
        if isinstance(is_drift, bool) or is_drift not in (0, 1):
            raise InvalidRequest(f"drift event {event['id']!r}: data.is_drift is {is_drift!r}, expected 0 or 1")
        p_values = [p for p in _as_list(inner.get("p_val")) if _finite(p)]
        by_feature = inner.get("p_val_by_feature") if isinstance(inner.get("p_val_by_feature"), dict) else {}
        threshold = _number(inner.get("threshold"), "threshold", event)
        drifted = sorted(k for k, p in by_feature.items() if _finite(p) and threshold is not None and p < threshold)
        evidence = {"features": drifted} if drifted else {}
        return Signal(
            key, model, kind, bool(is_drift), window, stream, signal,
            min(p_values) if p_values else None, threshold, "below", evidence,
        )  # fmt: skip
    value, threshold = _number(data.get("value"), "value", event), _number(data.get("threshold"), "threshold", event)
    if kind == QUALITY_DEGRADED:  # the trigger's own quality check: the window already fell below its threshold
        from kfloop.training.evaluate import higher_is_better

        metric = data.get("metric")
        direction = "below" if not isinstance(metric, str) or higher_is_better(metric) else "above"
        evidence = {"metric": metric} if isinstance(metric, str) else {}
        return Signal(key, model, kind, True, window, stream, signal, value, threshold, direction, evidence)
    status, direction = data.get("status", "alert"), data.get("direction", "below")
    if status not in ("ok", "alert", "insufficient"):
        raise InvalidRequest(f"{signal} event {event['id']!r}: status {status!r}, expected ok, alert or insufficient")
    if direction not in ("above", "below"):
        raise InvalidRequest(f"{signal} event {event['id']!r}: direction {direction!r}, expected above or below")
    evidence = data.get("evidence") if isinstance(data.get("evidence"), dict) else {}
    return Signal(
        key, model, kind, status == "alert", window, f"{stream}|{signal}", signal, value, threshold, direction, evidence
    )


def _as_list(value: object) -> list:
    return value if isinstance(value, list) else []


def _finite(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _number(value: object, what: str, event: dict) -> float | None:
    if value is None:
        return None
    if not _finite(value):
        raise InvalidRequest(f"{event['type']} event {event['id']!r}: {what} is {value!r}, expected a finite number")
    return float(value)


def decide(policy: RetrainPolicy, state: TriggerState, signal: Signal | dict, now: float) -> Decision:
    """What to do about one event (a CloudEvent or its ``read_signal``), given the model's state and the
    signal's rule (``RetrainPolicy.rule``); changes nothing."""
    if isinstance(signal, dict):
        signal = read_signal(signal)
    if state.seen(signal.key):
        return Decision("duplicate", f"event {signal.key} was already processed", _current_streak(state, signal))
    if signal.type == FEEDBACK:
        return Decision("ignore", "feedback labels are stored; quality checks decide on them", state.streak)
    rule = policy.rule(signal.signal)
    name = "drift" if signal.type == DRIFT_DETECTED else signal.signal
    if not signal.alerting(rule):
        shown = "did not drift" if signal.type == DRIFT_DETECTED else f"did not alert ({name})"
        if rule.threshold is not None and signal.value is not None:
            shown += f": {signal.value:.4g} against the policy's threshold {rule.threshold:.4g}"
        return Decision("ignore", f"window {signal.window_index} {shown}: {name} streak reset", 0, signal.signal)
    streak = _streak(state, signal)
    evidence = _evidence(signal, rule, streak)
    if streak < rule.consecutive_windows:
        return Decision(
            "waiting", f"{name} in {streak} of {rule.consecutive_windows} consecutive windows", streak,
            signal.signal, evidence,
        )  # fmt: skip
    if signal.type == DRIFT_DETECTED:
        why = f"drift in {streak} consecutive windows"
    elif signal.type == QUALITY_DEGRADED and rule.consecutive_windows == 1:
        why = "model quality degraded"
    else:
        why = f"{name} alert in {streak} consecutive window{'s' if streak > 1 else ''}"
    if rule.action == "alert":
        return Decision("alert", f"{why}: alert only (the policy does not retrain on {name})", streak,
                        signal.signal, evidence)  # fmt: skip
    blocked = _blocked(policy, state, now)
    if blocked:
        return Decision(blocked[0], f"{why}, but {blocked[1]}", streak, signal.signal, evidence)
    return Decision("start", why, streak, signal.signal, evidence)


def _evidence(signal: Signal, rule: SignalRule, streak: int) -> dict:
    """What a decision rests on: the signal's value and threshold, its window, streak and rule."""
    doc = {
        "signal": signal.signal,
        "window_index": signal.window_index,
        "stream": signal.stream,
        "streak": streak,
        "rule": rule.to_dict(),
    }
    if signal.value is not None:
        doc["value"] = signal.value
    threshold = rule.threshold if rule.threshold is not None and signal.value is not None else signal.threshold
    if threshold is not None:
        doc.update(threshold=threshold, direction=signal.direction)
    if signal.evidence:
        doc["details"] = signal.evidence
    return doc


def _current_streak(state: TriggerState, signal: Signal) -> int:
    if not signal.signal or signal.type == DRIFT_DETECTED:
        return state.streak
    return int((state.streaks.get(signal.signal) or {}).get("count", 0))


def _streak(state: TriggerState, signal: Signal) -> int:
    """The signal's streak including this alerting window."""
    if signal.type == DRIFT_DETECTED:
        count, stream, last = state.streak, state.stream, state.last_window
    else:
        entry = state.streaks.get(signal.signal) or {}
        count, stream, last = int(entry.get("count", 0)), entry.get("stream"), entry.get("last_window")
    if signal.window_index is None:  # no window numbers: count every alerting window as the next one
        return count + 1 if stream == signal.stream else 1
    continues = count > 0 and stream == signal.stream and last is not None and signal.window_index == last + 1
    return count + 1 if continues else 1


def _blocked(policy: RetrainPolicy, state: TriggerState, now: float) -> tuple[str, str] | None:
    run = state.in_flight
    if run:
        return "in_flight", f"run {run.name} ({run.status.value}) is in flight since {run.started_iso}"
    if state.last_finished is not None and now - state.last_finished < policy.cooldown_seconds:
        left = policy.cooldown_seconds - (now - state.last_finished)
        return "cooldown", f"the last run ended {now - state.last_finished:.0f}s ago (cooldown {left:.0f}s left)"
    return None
