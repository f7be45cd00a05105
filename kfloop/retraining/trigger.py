"""The retraining trigger: events in, decisions recorded, runs launched and followed, events out.

``RetrainTrigger.handle_event`` takes one CloudEvent (any monitoring signal's event, see
``kfloop.names.SIGNAL_EVENT_TYPES``, or feedback), decides with ``kfloop.retraining.policy`` (per signal:
alert only, which records the event and the decision, or retrain) and keeps the event and the model's new state on the
object store; a feedback event stores its labels first (all or nothing) and then checks the
model's labeled traffic with a ``QualityMonitor``, whose degraded windows become
``io.kfloop.quality.degraded`` events handled like any other. An event naming a model with no registered
version (unless it is one of ``new_models``, which may be trained from the original source) is refused
with ``ModelNotFound`` before anything is written. A decision to start puts a run
*in flight* in the stored state (a ``RunInFlight``, ``launching``) and returns at once; ``step`` (called by
a background thread) builds the retraining data, launches the run through the runner (retried
with backoff; after ``launch_attempts`` failures the run is reported failed), emits
``io.kfloop.retrain.started``, polls the run and emits ``io.kfloop.retrain.finished`` with the
registered version or why none was registered. Emitted events go to the durable outbox and the
event log, with ids derived from the run name so a restart re-emits the same ids. With
``auto_rollout`` set (a ``kfloop.rollout.auto.AutoRollout``), a registered version then starts its
canary analysis in the background.
"""

from __future__ import annotations

import collections
import logging
import threading
import time

from kfloop.config import Settings
from kfloop.errors import ConfigError, DataError, InvalidRequest, KfloopError, ModelNotFound, RegistryError
from kfloop.events.cloudevents import make_event
from kfloop.names import (
    FEEDBACK,
    QUALITY_DEGRADED,
    RETRAIN_FINISHED,
    RETRAIN_STARTED,
    run_name,
    validate_model_name,
)
from kfloop.retraining.inputs import (
    current_version,
    drift_reference,
    pipeline_arguments,
    registered_by,
    training_data,
)
from kfloop.retraining.policy import (
    RetrainPolicy,
    TriggerState,
    decide,
    load_state,
    read_signal,
    save_state,
    stored_models,
)
from kfloop.retraining.quality_signal import QualityOptions, check_quality
from kfloop.retraining.reference_data import stored_event
from kfloop.retraining.run_state import RunInFlight, RunPhase
from kfloop.retry import backoff_delay
from kfloop.store.event_log import record_event
from kfloop.store.objects import open_store
from kfloop.store.registry import Registry
from kfloop.timestamps import rfc3339

log = logging.getLogger(__name__)

PERMANENT = (ConfigError, DataError, ModelNotFound, InvalidRequest)  # retrying cannot help


class RetrainTrigger:
    """Decides on events and runs retraining for every model on one store, one run in flight per model."""

    def __init__(
        self,
        settings: Settings,
        policy: RetrainPolicy,
        runner,
        outbox,
        *,
        original_source: str | None = None,
        source: str = "kfloop/trigger",
        quality: QualityOptions | None = None,
        launch_attempts: int = 5,
        retry_seconds: float = 2.0,
        retry_max_seconds: float = 60.0,
        poll_seconds: float = 5.0,
        new_models: tuple[str, ...] = (),
        clock=time.time,
    ):
        if launch_attempts < 1:
            raise ConfigError(f"launch_attempts is {launch_attempts}: expected at least 1")
        self.settings, self.policy, self.runner, self.outbox = settings, policy, runner, outbox
        self.original_source, self.source, self.quality = original_source, source, quality or QualityOptions()
        self.launch_attempts, self.retry_seconds, self.retry_max_seconds = (
            launch_attempts,
            retry_seconds,
            retry_max_seconds,
        )
        self.poll_seconds, self.clock = poll_seconds, clock
        self.new_models = frozenset(validate_model_name(m) for m in new_models)
        self._known: set[str] = set()  # models seen with a registered version (versions are never deleted)
        self.store = open_store(settings)
        self.registry = Registry(self.store)
        self.events = collections.Counter()  # (type, outcome) -> count
        self.runs = collections.Counter()  # ("started", target) / ("finished", status) -> count
        self._lock = threading.RLock()
        self._active = {m for m in stored_models(self.store) if load_state(self.store, m).in_flight}
        self._next_poll: dict[str, float] = {}
        self._feedback = None  # a FeedbackStore, made when labels first arrive (it imports pandas)
        self.wake = threading.Event()
        self.auto_rollout = None  # an AutoRollout: canary analysis of each registered version

    # -- events --------------------------------------------------------------------------------

    def handle_event(self, event: dict) -> dict:
        """Decide on one event; InvalidRequest (nothing changed) when it is malformed."""
        signal = read_signal(event)
        self.require_known(signal.model)
        with self._lock:
            state = load_state(self.store, signal.model)
            decision = decide(self.policy, state, signal, self.clock())
            out = {"model": signal.model, "event_id": event["id"], "type": signal.type, **decision.to_dict()}
            quality_events = []
            if decision.action != "duplicate":
                if signal.type == FEEDBACK:
                    out["feedback"], quality_events = self._store_feedback(state, event)
                record_event(self.store, signal.model, event)
                state.apply(signal, decision)
                if decision.action == "start":
                    state.in_flight = self._new_run(signal.model, event, decision.reason, decision.evidence)
                    self._active.add(signal.model)
                save_state(self.store, state)
            out["in_flight"] = _stored(state.in_flight)
        self.events[(signal.type, decision.action)] += 1
        log.info("%s %s for %s: %s (%s)", signal.type, event["id"], signal.model, decision.action, decision.reason)
        if decision.action == "start":
            self.wake.set()
        out["quality"] = [self.handle_event(quality) for quality in quality_events]
        return out

    def require_known(self, model: str) -> None:
        """``ModelNotFound`` unless ``model`` has a registered version or is one of ``new_models``: an
        event naming any other model is refused before anything is written (no state, no event log)."""
        if model in self._known or model in self.new_models:
            return
        if not self.registry.version_numbers(model):
            raise ModelNotFound(
                f"model {model!r} has no registered version, so the trigger keeps no state for it: register a "
                "version first (kfloop pipeline run), or name it in --new_models to train it from --original_source"
            )
        self._known.add(model)

    def handle_feedback(self, model: object, labels: object) -> dict:
        """Labels posted directly: handled as an ``io.kfloop.feedback`` event of this service."""
        if not isinstance(model, str) or not model:
            raise InvalidRequest(f"feedback needs a model name in 'model', got {model!r}")
        event = make_event(FEEDBACK, f"{self.source}/feedback", {"model": model, "labels": labels}, subject=model)
        return self.handle_event(event)

    def _store_feedback(self, state: TriggerState, event: dict) -> tuple[dict, list[dict]]:
        """Store the event's labels, then check quality; returns the count and the emitted
        ``io.kfloop.quality.degraded`` events (ids derived from the feedback event's)."""
        from kfloop.monitoring.feedback import FeedbackStore
        from kfloop.schema import FeatureSchema

        model, record = state.model, current_version(self.registry, state.model)
        if record is None:
            raise ModelNotFound(f"model {model!r} has no registered version: no schema to check labels against")
        schema = FeatureSchema.from_dict(record.schema)
        self._feedback = self._feedback or FeedbackStore(self.store)
        accepted = self._feedback.add(model, schema, event["data"].get("labels"))
        try:
            degraded = check_quality(self.store, state, record, schema, self.quality)
        except KfloopError as e:  # the labels are stored; a failed check must not lose them
            log.warning("quality check of %s failed: %s", model, e)
            degraded = []
        return accepted, [
            self._emit(
                model,
                QUALITY_DEGRADED,
                data,
                id=f"{event['id']}.quality.{data['model_version']}.{data['window_index']}",
            )
            for data in degraded
        ]

    def _new_run(self, model: str, event: dict, reason: str, evidence: dict | None = None) -> RunInFlight:
        name = run_name(model, event["id"])
        return RunInFlight.start(name, event, reason, self.clock(), self.runner.target, self.policy.strategy, evidence)

    # -- runs ----------------------------------------------------------------------------------

    def step(self) -> None:
        """Launch runs waiting to start and poll running ones (called from a background thread)."""
        with self._lock:
            models = sorted(self._active)
        for model in models:
            with self._lock:
                run = load_state(self.store, model).in_flight
                if run is None:
                    self._active.discard(model)
                    continue
            if run.status is RunPhase.LAUNCHING and self.clock() >= run.next_attempt:
                self._launch(model, run)
            elif run.status is RunPhase.RUNNING and self.clock() >= self._next_poll.get(model, 0):
                self._poll(model, run)

    def _launch(self, model: str, run: RunInFlight) -> None:
        try:
            data, record = run.data, current_version(self.registry, model)
            if data is None:
                data = training_data(self.settings, self.policy, record, model, run.name, self.original_source)
                event = stored_event(self.store, model, run.event_id)  # a drift event: its own reference
                data = drift_reference(self.settings, record, model, run.name, event, data)
            run.prepare(data, pipeline_arguments(self.policy, model, data, record))
            run_id = self.runner.launch(run.name, model, run.arguments)
        except Exception as e:  # noqa: BLE001 - every failure is retried or reported, never lost
            self._launch_failed(model, run, e)
            return
        run.launched(run_id)
        self._emit(model, RETRAIN_STARTED, run.started_data(model), id=run.started_event_id)
        self.runs[("started", run.target)] += 1
        self._update(model, run)

    def _launch_failed(self, model: str, run: RunInFlight, error: Exception) -> None:
        attempts, why = run.attempts + 1, f"{error.__class__.__name__}: {error}"
        if isinstance(error, PERMANENT) or attempts >= self.launch_attempts:
            tries = "" if isinstance(error, PERMANENT) else f" after {attempts} attempts"
            self._finish(model, run, "failed", None, f"could not start the run{tries}: {why}")
            return
        delay = backoff_delay(attempts, self.retry_seconds, self.retry_max_seconds)
        run.launch_failed(why, self.clock() + delay)
        log.warning(
            "starting run %s failed (attempt %d of %d, next in %.1fs): %s",
            run.name,
            attempts,
            self.launch_attempts,
            delay,
            why,
        )
        self._update(model, run)

    def _poll(self, model: str, run: RunInFlight) -> None:
        try:
            status = self.runner.poll(run.run_id)
        except Exception as e:  # noqa: BLE001 - the backend may be down for a while
            failures = run.poll_failed()
            if failures >= self.launch_attempts:
                reason = f"could not read the state of run {run.run_id} after {failures} attempts: {e}"
                self._finish(model, run, "failed", None, reason)
                return
            self._next_poll[model] = self.clock() + backoff_delay(failures, self.retry_seconds, self.retry_max_seconds)
            self._update(model, run)
            return
        self._next_poll[model] = self.clock() + self.poll_seconds
        if status.state == "running":
            if run.poll_answered():
                self._update(model, run)
            return
        registered, reason = status.registered, status.reason
        if status.state == "succeeded" and not status.registered_known:
            registered, reason = registered_by(self.registry, model, run.run_id, run.started)
        self._finish(model, run, status.state, registered, reason)

    def _finish(self, model: str, run: RunInFlight, outcome: str, registered: str | None, reason: str) -> None:
        now = self.clock()
        result = run.finish(model, outcome, registered, reason, now)
        self._emit(model, RETRAIN_FINISHED, result, id=run.finished_event_id)
        self.runs[("finished", outcome)] += 1
        if registered and self.auto_rollout is not None:  # before the state is saved: a crash in between
            try:  # finishes the run again, and the claim is idempotent
                self.auto_rollout.start(registered)
            except KfloopError as e:
                log.error("could not start the rollout of %s: %s", registered, e)
        with self._lock:
            state = load_state(self.store, model)
            if state.in_flight and state.in_flight.name == run.name:
                state.finish(result, now)
                save_state(self.store, state)
            self._active.discard(model)
        log.info("run %s of %s %s: %s", run.name, model, outcome, registered or reason)

    def _update(self, model: str, run: RunInFlight) -> None:
        with self._lock:
            state = load_state(self.store, model)
            if state.in_flight and state.in_flight.name == run.name:
                state.in_flight = run
                save_state(self.store, state)

    def _emit(self, model: str, type: str, data: dict, id: str | None = None) -> dict:
        event = make_event(type, self.source, data, subject=model, id=id)
        self.outbox.append(event)
        record_event(self.store, model, event)
        return event

    # -- status --------------------------------------------------------------------------------

    def in_flight_models(self) -> list[str]:
        with self._lock:
            return sorted(self._active)

    def status(self, model: str | None = None) -> dict:
        """The policy and every model's state, or one model's state; InvalidRequest for a bad name."""
        with self._lock:
            if model is not None:
                try:
                    validate_model_name(model)
                except RegistryError as e:
                    raise InvalidRequest(str(e)) from None
                return self._model_status(load_state(self.store, model))
            models = {m: self._model_status(load_state(self.store, m)) for m in stored_models(self.store)}
        return {"policy": self.policy.to_dict(), "target": self.runner.target, "models": models}

    def _model_status(self, state: TriggerState) -> dict:
        left = 0.0
        if state.last_finished is not None:
            left = max(0.0, self.policy.cooldown_seconds - (self.clock() - state.last_finished))
        return {
            "model": state.model,
            "policy": self.policy.to_dict(),
            "streak": state.streak,
            "last_window": state.last_window,
            "processed_events": len(state.processed),
            "last_finished": rfc3339(state.last_finished) if state.last_finished else None,
            "cooldown_left_seconds": round(left, 1),
            "in_flight": _stored(state.in_flight),
            "runs": state.history,
            "alerts": state.alerts,
            "rollouts": self.auto_rollout.status(state.model) if self.auto_rollout else [],
        }


def _stored(run: RunInFlight | None) -> dict | None:
    """The run in flight as stored (and as the service shows it)."""
    return run.to_dict() if run else None
