"""What ``kfloop demo`` has seen of the loop: events from the event log and canaries on the gateway.

``LoopView.poll`` reads the model's new events (``EventWatcher``) and turns the ones worth showing
into timeline entries (texts from ``kfloop.demo.events``): drift windows (a false alarm before
any drift was injected, the detection after it), the retraining run's start and end, the first
quality degradation of each version after the concept drift, canary analysis decisions.
``LoopView.gateway`` adds an entry when the gateway starts serving a canary or changes its share.
The demo's steps wait on the fields it fills (``started_run``, ``finished_run``).
"""

from __future__ import annotations

import time

from kfloop.demo import events as ev
from kfloop.demo.services import EventWatcher
from kfloop.demo.timeline import Timeline
from kfloop.names import (
    DRIFT_DETECTED,
    QUALITY_DEGRADED,
    RETRAIN_FINISHED,
    RETRAIN_STARTED,
    ROLLOUT_DECISION,
    auto_rollouts_prefix,
)
from kfloop.retraining.policy import load_state
from kfloop.store.objects import ObjectStore, get_json
from kfloop.store.registry import Registry, VersionRecord
from kfloop.timestamps import epoch_seconds

FINAL_VERDICTS = ("promoted", "rolled-back", "aborted")


class LoopView:
    """The loop of ``model`` as the demo follows it."""

    def __init__(self, timeline: Timeline, store: ObjectStore, registry: Registry, model: str, window: int):
        self.timeline, self.store, self.registry, self.model, self.window = timeline, store, registry, model, window
        self.watcher = EventWatcher(store, model)
        self.first_version: str | None = None  # the version serving when the drift was injected
        self.onset: tuple[float, int] | None = None  # time of the first drifted request, rows served before it
        self.started_run: dict | None = None
        self.finished_run: dict | None = None
        self.drift_windows_after_start = 0  # the trigger ignores these: run in flight, then cooldown
        self.degraded: set[str] = set()  # versions whose quality degradation is on the timeline
        self.canary_percent: dict[int, int] = {}  # version -> share last seen on the gateway
        self.decided: dict[int, tuple[str, str]] = {}  # version -> (outcome, reason) of its canary analysis
        self.decided_at: dict[int, float] = {}  # version -> time of its analysis's final decision

    def poll(self) -> None:
        for event in self.watcher.poll():
            self.on_event(event)

    def on_event(self, event: dict) -> None:
        kind, data, at = event.get("type"), ev.data_of(event), _event_time(event)
        if kind == DRIFT_DETECTED and ev.is_drift(event):
            self._on_drift(event, at)
        elif kind == QUALITY_DEGRADED:
            self._on_quality(data, at)
        elif kind == RETRAIN_STARTED and self.started_run is None:
            self.started_run = data
            run = load_state(self.store, self.model).in_flight
            rows = (run.data if run else None) or {}
            self.timeline.add("run_started", ev.run_started_text(data, rows), at=at, run=data.get("run_name"))
        elif kind == RETRAIN_FINISHED and self.finished_run is None:
            self.finished_run = data
            registered = data.get("registered")
            text = (
                f"retraining run finished: {registered} registered ({auc_text(self.registry.resolve(registered))})"
                if registered
                else f"retraining run {data.get('status')}: {data.get('reason')}"
            )
            self.timeline.add(
                "registered" if registered else "run_finished", text, at=at, ref=registered, seconds=data.get("seconds")
            )
        elif kind == ROLLOUT_DECISION:
            self._on_decision(data, at)

    def _on_drift(self, event: dict, at: float) -> None:
        window, _, _, version = ev.drift_window(event)
        before_onset = self.onset is None or (
            version == self.first_version and window is not None and window < self.onset[1] // self.window
        )
        if before_onset:
            self.timeline.add(
                "false_alarm",
                f"drift flagged in window {window} before any drift was injected "
                f"(a false alarm: the trigger waits for 2 windows in a row)",
                at=at,
            )
        elif self.started_run is None:
            self.timeline.add("drift_detected", ev.drift_text(event), at=at, window=window, version=version)
        else:
            self.drift_windows_after_start += 1

    def _on_quality(self, data: dict, at: float) -> None:
        """The first degraded window of each version whose labels came after the concept drift (the
        windows before it, degraded by chance or by a stricter threshold, stay in the report)."""
        concept, end = self.timeline.first("concept_drift"), _parse_time(data.get("end"))
        version = str(data.get("model_version"))
        if concept is None or end is None or end < concept.epoch or version in self.degraded:
            return
        self.degraded.add(version)
        self.timeline.add(
            "quality_degraded", f"{ev.quality_text(data)} ({self.trigger_view()})", at=at, version=version
        )

    def trigger_view(self) -> str:
        """What the trigger does about a quality event now: start a run, or why not."""
        state = load_state(self.store, self.model)
        if state.in_flight:
            return "a retraining run is already in flight"
        if state.last_finished is not None:
            return "the trigger waits: cooldown after the last run"
        return "the trigger starts a retraining run"

    def outcome(self, version: int) -> tuple[str, str] | None:
        """How the canary analysis of ``version`` ended: its final decision, or the failure the
        trigger recorded for an automatic rollout that could not decide; None while it runs."""
        if version in self.decided:
            return self.decided[version]
        for key in self.store.list(auto_rollouts_prefix(self.model)):
            record = get_json(self.store, key) if key.endswith(".json") else {}
            if record.get("version") == version and record.get("status") == "failed":
                return "failed", record.get("reason", "")
        return None

    def _on_decision(self, data: dict, at: float) -> None:
        verdict = data.get("verdict")
        if verdict in FINAL_VERDICTS and isinstance(data.get("canary_version"), int):
            self.decided[data["canary_version"]] = (verdict, str(data.get("reason")))
            self.decided_at[data["canary_version"]] = at
        if verdict == "passed":
            self.timeline.add(
                "canary_step",
                ev.decision_text(data),
                at=at,
                version=data.get("canary_version"),
                percent=data.get("percent"),
            )
        elif verdict in ("rolled-back", "aborted"):
            self.timeline.add("rolled_back", ev.decision_text(data), at=at, version=data.get("canary_version"))

    def gateway(self, status: dict) -> None:
        """A timeline entry when the gateway (its status document) serves a new canary or changes its share."""
        canary = status.get("canary") or {}
        version, percent = canary.get("version"), canary.get("percent")
        if version is not None and self.canary_percent.get(version) != percent:
            first = version not in self.canary_percent
            self.canary_percent[version] = percent
            self.timeline.add(
                "canary_serving" if first else "canary_share",
                f"v{version} serving as canary: {percent}% of the traffic"
                if first
                else f"v{version} takes {percent}% of the traffic",
                version=version,
                percent=percent,
            )


def auc_text(record: VersionRecord) -> str:
    """``auc 0.86``: the version's gate metric on its test split."""
    metric = (record.metrics.get("gate") or {}).get("metric") or "auc"
    value = (record.metrics.get("metrics") or {}).get(metric)
    return f"{metric} {value:.2f}" if isinstance(value, (int, float)) else f"{metric} unknown"


def _event_time(event: dict) -> float:
    when = _parse_time(event.get("time"))
    return time.time() if when is None else when


def _parse_time(value: object) -> float | None:
    try:
        return epoch_seconds(str(value))
    except ValueError:
        return None
