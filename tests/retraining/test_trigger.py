"""RetrainTrigger driven directly: a scripted in-memory runner and a fake clock, on a real LocalStore
(registry, trigger state, event log) and a real outbox without a sink. What the service tests
(tests/serving/trigger) show through a process, here step by step: one run per event, launches
retried with backoff, each outcome's events and state, and a restart that carries on."""

from __future__ import annotations

import json

import pytest

from kfloop.config import Settings
from kfloop.errors import DataError
from kfloop.events.cloudevents import make_event
from kfloop.events.outbox import Outbox
from kfloop.names import DRIFT_DETECTED, RETRAIN_FINISHED, RETRAIN_STARTED
from kfloop.retraining.policy import RetrainPolicy, load_state
from kfloop.retraining.run_state import RunPhase
from kfloop.retraining.runners import RunStatus
from kfloop.retraining.trigger import RetrainTrigger
from kfloop.store.event_log import read_events
from kfloop.store.objects import LocalStore
from kfloop.store.registry import Registry
from tests.fakes.bundles import make_bundle

T0 = 1_700_000_000.0  # 2023-11-14T22:13:20Z


class FakeClock:
    def __init__(self, now: float = T0):
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class ScriptedRunner:
    """A runner in memory: each launch takes the next of ``launches`` (an exception is raised, a string
    is the run id) and each poll the next of ``polls`` (a RunStatus, or an exception to raise); once a
    script runs out, launches answer ``id-<name>`` and polls ``running``."""

    target = "scripted"

    def __init__(self, launches=(), polls=()):
        self.launches, self.polls = list(launches), list(polls)
        self.launched: list[tuple[str, str, dict]] = []
        self.polled: list[str] = []

    def launch(self, name: str, model: str, arguments: dict) -> str:
        self.launched.append((name, model, arguments))
        outcome = self.launches.pop(0) if self.launches else f"id-{name}"
        if isinstance(outcome, BaseException):
            raise outcome
        return outcome

    def poll(self, run_id: str) -> RunStatus:
        self.polled.append(run_id)
        outcome = self.polls.pop(0) if self.polls else RunStatus("running")
        if isinstance(outcome, BaseException):
            raise outcome
        return outcome


class RecordedRollouts:
    """Stands in for AutoRollout: records the versions whose rollout was started."""

    def __init__(self):
        self.started: list[str] = []

    def start(self, ref: str) -> None:
        self.started.append(ref)

    def status(self, model: str) -> list:
        return []


@pytest.fixture
def settings(tmp_path) -> Settings:
    return Settings(home=tmp_path / "home")


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def make_trigger(settings, clock):
    """A RetrainTrigger on ``settings``'s store; several made in one test share the store (a restart)."""

    def _make(
        runner: ScriptedRunner, cooldown_seconds: float = 600, tuning="reuse", source="sample:churn", **options
    ) -> RetrainTrigger:
        policy = RetrainPolicy(consecutive_windows=1, cooldown_seconds=cooldown_seconds, tuning=tuning)
        options.setdefault("new_models", ("churn",))  # trained from ``source`` before it has a version
        return RetrainTrigger(
            settings,
            policy,
            runner,
            Outbox.for_settings(settings, "trigger", None),
            original_source=source,
            retry_seconds=10,
            retry_max_seconds=60,
            poll_seconds=5,
            clock=clock,
            **options,
        )

    return _make


def drift(window: int, id: str | None = None, model: str = "churn") -> dict:
    data = {"data": {"is_drift": 1, "window_index": window}, "model": model, "model_version": "1"}
    return make_event(DRIFT_DETECTED, "kfloop/churn-transformer", data, subject=model, id=id)


def emitted(trigger: RetrainTrigger, type: str | None = None) -> list[dict]:
    """The events waiting in the trigger's outbox, oldest first (optionally one type)."""
    events = [json.loads(path.read_bytes()) for path in trigger.outbox.pending()]
    return [e for e in events if type is None or e["type"] == type]


def started_run(trigger: RetrainTrigger, runner: ScriptedRunner, event: dict) -> str:
    """Handle ``event``, launch its run; returns the run's name."""
    assert trigger.handle_event(event)["action"] == "start"
    trigger.step()
    (name, _, _), *_ = runner.launched
    assert load_state(trigger.store, "churn").in_flight.status is RunPhase.RUNNING
    return name


# -- one run per signal ----------------------------------------------------------------------------


def test_a_drift_signal_starts_one_run_and_the_same_event_twice_still_one(make_trigger):
    runner = ScriptedRunner()
    trigger = make_trigger(runner)
    event = drift(0, id="e1")
    first = trigger.handle_event(event)
    assert (first["action"], first["reason"]) == ("start", "drift in 1 consecutive windows")
    assert first["in_flight"] == {
        "name": "kfloop-churn-e1",
        "run_id": None,
        "event_id": "e1",
        "event_type": DRIFT_DETECTED,
        "reason": "drift in 1 consecutive windows",
        "started": T0,
        "started_iso": "2023-11-14T22:13:20.000000Z",
        "target": "scripted",
        "strategy": "combined",
        "status": "launching",
        "attempts": 0,
        "next_attempt": T0,
        "evidence": {  # what the decision rested on, kept with the run and in retrain.started
            "signal": "feature_drift",
            "window_index": 0,
            "stream": "kfloop/churn-transformer||1",
            "streak": 1,
            "rule": {"action": "retrain", "consecutive_windows": 1, "threshold": None},
        },
    }
    assert trigger.handle_event(event)["action"] == "duplicate"
    assert trigger.in_flight_models() == ["churn"] and not runner.launched  # launched by step, not by the event

    trigger.step()
    assert runner.launched == [("kfloop-churn-e1", "churn", {"source": "sample:churn", "model_name": "churn"})]
    blocked = trigger.handle_event(drift(1))
    assert blocked["action"] == "in_flight"
    assert "run kfloop-churn-e1 (running) is in flight since 2023-11-14T22:13:20.000000Z" in blocked["reason"]
    trigger.step()  # polls it; launches nothing
    assert len(runner.launched) == 1 and runner.polled == ["id-kfloop-churn-e1"]

    (started,) = emitted(trigger)
    assert started["type"] == RETRAIN_STARTED and started["id"] == "kfloop-churn-e1.started"
    assert started["subject"] == "churn"
    assert started["data"] == {
        "model": "churn",
        "run_id": "id-kfloop-churn-e1",
        "run_name": "kfloop-churn-e1",
        "event_id": "e1",
        "target": "scripted",
        "strategy": "combined",
        "source": "sample:churn",
        "rows": None,
        "arguments": {"source": "sample:churn", "model_name": "churn"},
        "reason": "drift in 1 consecutive windows",
        "evidence": load_state(trigger.store, "churn").in_flight.evidence,
    }
    assert started["data"]["evidence"]["signal"] == "feature_drift"
    logged = read_events(trigger.store, "churn")
    assert sorted(e["type"] for e in logged) == sorted([DRIFT_DETECTED, DRIFT_DETECTED, RETRAIN_STARTED])
    assert trigger.events[(DRIFT_DETECTED, "start")] == 1 and trigger.events[(DRIFT_DETECTED, "duplicate")] == 1
    assert trigger.runs[("started", "scripted")] == 1


def test_an_event_naming_a_model_without_a_version_is_refused_and_writes_nothing(make_trigger, tmp_path):
    from kfloop.errors import ModelNotFound
    from kfloop.names import FEEDBACK, QUALITY_DEGRADED

    runner = ScriptedRunner()
    trigger = make_trigger(runner, new_models=())
    before = trigger.store.list("")
    feedback = make_event(FEEDBACK, "client", {"model": "ghost", "labels": [{"request_id": "a:0", "label": 1}]})
    quality = make_event(QUALITY_DEGRADED, "kfloop/trigger", {"model": "ghost"}, subject="ghost")
    for event in (drift(0, model="ghost"), drift(0, model="churn"), feedback, quality):
        with pytest.raises(ModelNotFound, match="has no registered version"):
            trigger.handle_event(event)
    with pytest.raises(ModelNotFound):
        trigger.handle_feedback("ghost", [{"request_id": "a:0", "label": 1}])
    assert trigger.store.list("") == before and trigger.in_flight_models() == [] and not runner.launched
    # a registered version makes the model known; new_models lets one be trained before its first version
    Registry(trigger.store).register("churn", make_bundle(tmp_path / "b1", 0.8))
    assert trigger.handle_event(drift(0, model="churn"))["action"] == "start"
    assert make_trigger(runner, new_models=("ghost",)).handle_event(drift(0, model="ghost"))["action"] == "start"
    assert sorted(k.split("/")[1] for k in trigger.store.list("trigger/")) == ["churn", "ghost"]


def test_launch_failures_are_retried_with_backoff_then_reported_failed(make_trigger, clock):
    runner = ScriptedRunner(launches=[ConnectionError("refused")] * 3)
    trigger = make_trigger(runner, launch_attempts=3)
    trigger.handle_event(drift(0, id="e1"))
    trigger.step()
    run = load_state(trigger.store, "churn").in_flight
    assert (run.status, run.attempts, run.last_error) == (RunPhase.LAUNCHING, 1, "ConnectionError: refused")
    assert T0 + 8 <= run.next_attempt <= T0 + 10  # retry_seconds 10, less up to 20% jitter
    assert run.arguments == {"source": "sample:churn", "model_name": "churn"}  # kept for the status

    trigger.step()
    clock.advance(7.9)
    trigger.step()
    assert len(runner.launched) == 1  # not before the backoff is over
    clock.advance(2.1)
    trigger.step()
    assert len(runner.launched) == 2
    run = load_state(trigger.store, "churn").in_flight
    assert run.attempts == 2 and clock.now + 16 <= run.next_attempt <= clock.now + 20  # doubled
    clock.advance(15.9)
    trigger.step()
    assert len(runner.launched) == 2
    clock.advance(4.1)
    trigger.step()
    assert len(runner.launched) == 3

    (finished,) = emitted(trigger)
    assert finished["type"] == RETRAIN_FINISHED and finished["id"] == "kfloop-churn-e1.finished"
    assert finished["data"]["status"] == "failed" and finished["data"]["run_id"] is None
    assert finished["data"]["reason"] == "could not start the run after 3 attempts: ConnectionError: refused"
    assert finished["data"]["seconds"] == round(clock.now - T0, 3)
    state = load_state(trigger.store, "churn")
    assert state.in_flight is None and state.history == [finished["data"]] and state.last_finished == clock.now
    assert trigger.in_flight_models() == [] and trigger.runs[("finished", "failed")] == 1


def test_a_launch_error_that_retrying_cannot_help_fails_the_run_at_once(make_trigger):
    runner = ScriptedRunner(launches=[DataError("no rows in sample:churn")])
    trigger = make_trigger(runner)
    trigger.handle_event(drift(0))
    trigger.step()
    (finished,) = emitted(trigger, RETRAIN_FINISHED)
    assert finished["data"]["reason"] == "could not start the run: DataError: no rows in sample:churn"
    assert len(runner.launched) == 1 and load_state(trigger.store, "churn").in_flight is None


# -- outcomes --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "outcome, expected",
    [
        (RunStatus("succeeded", "churn:7"), ("succeeded", "churn:7", "")),
        (
            RunStatus("succeeded", None, "the quality gate did not pass: auc 0.51 is below 0.7"),
            ("succeeded", None, "the quality gate did not pass: auc 0.51 is below 0.7"),
        ),
        (
            RunStatus("failed", reason="data quality rule 'not_empty' failed"),
            ("failed", None, "data quality rule 'not_empty' failed"),
        ),
        (
            RunStatus("succeeded", registered_known=False),  # a cluster run: the registry says what it registered
            ("succeeded", None, "the run registered no version (the quality gate did not pass; see its evaluate step)"),
        ),
    ],
)
def test_a_runs_outcome_is_reported_and_starts_the_cooldown(make_trigger, clock, outcome, expected):
    runner = ScriptedRunner(polls=[RunStatus("running"), outcome])
    trigger = make_trigger(runner)
    trigger.auto_rollout = rollouts = RecordedRollouts()
    name = started_run(trigger, runner, drift(0, id="e1"))
    clock.advance(5)
    trigger.step()
    assert not emitted(trigger, RETRAIN_FINISHED)
    clock.advance(4.9)
    trigger.step()  # the next poll is poll_seconds later
    assert len(runner.polled) == 1
    clock.advance(0.1)
    trigger.step()

    (finished,) = emitted(trigger, RETRAIN_FINISHED)
    data = finished["data"]
    assert finished["id"] == f"{name}.finished" and (data["status"], data["registered"], data["reason"]) == expected
    assert data["run_id"] == f"id-{name}" and data["seconds"] == 10.0
    assert data["finished_iso"] == "2023-11-14T22:13:30.000000Z"
    assert rollouts.started == ([expected[1]] if expected[1] else [])
    state = load_state(trigger.store, "churn")
    assert state.in_flight is None and state.history == [data] and state.last_finished == clock.now
    assert trigger.runs[("finished", expected[0])] == 1
    logged = [e["type"] for e in read_events(trigger.store, "churn")]
    assert logged == [DRIFT_DETECTED, RETRAIN_STARTED, RETRAIN_FINISHED]

    clock.advance(60)
    assert trigger.status("churn")["cooldown_left_seconds"] == 540.0
    assert trigger.handle_event(drift(1))["action"] == "cooldown"
    clock.advance(540)
    assert trigger.handle_event(drift(2))["action"] == "start"


def test_the_version_a_cluster_run_registered_is_found_by_its_run_id(make_trigger, tmp_path, settings, clock):
    runner = ScriptedRunner(polls=[RunStatus("succeeded", registered_known=False)])
    trigger = make_trigger(runner)
    name = started_run(trigger, runner, drift(0))
    registry = Registry(LocalStore(settings.home))
    registry.register("churn", make_bundle(tmp_path / "b1", 0.8), lineage={"pipeline_run_id": "another-run"})
    registry.register("churn", make_bundle(tmp_path / "b2", 0.9), lineage={"pipeline_run_id": f"id-{name}"})
    clock.advance(5)
    trigger.step()
    (finished,) = emitted(trigger, RETRAIN_FINISHED)
    assert finished["data"]["registered"] == "churn:2" and finished["data"]["reason"] == ""


@pytest.mark.parametrize("tuning", ["reuse", "retune"])
def test_a_run_reuses_the_production_versions_tuned_parameters_or_retunes(make_trigger, tmp_path, settings, tuning):
    source = tmp_path / "original.csv"  # the fake bundle's schema: tenure, plan -> churn
    source.write_text("tenure,plan,churn\n1,basic,0\n30,premium,1\n4,basic,0\n")
    lineage = {
        "data_uri": str(source),
        "parameters": {"max_depth": 3, "learning_rate": 0.05},
        "tuning": {"trials_requested": 12, "budget_seconds": 60.0, "space": {"max_depth": {"low": 2, "high": 8}}},
    }
    registry = Registry(LocalStore(settings.home))
    registry.register("churn", make_bundle(tmp_path / "b1", 0.8), lineage=lineage)
    registry.set_stage("churn", 1, "production")
    runner = ScriptedRunner()
    started_run(make_trigger(runner, tuning=tuning, source=str(source)), runner, drift(0))
    ((_, _, arguments),) = runner.launched
    if tuning == "reuse":
        assert (arguments["max_depth"], arguments["tuning_trials"]) == (3, 0) and "learning_rate" not in arguments
    else:
        assert (arguments["tuning_trials"], arguments["tuning_budget_seconds"]) == (12, 60.0)
        assert arguments["tuning_ranges"]["max_depth"] == [2, 8] and "max_depth" not in arguments


def test_a_backend_that_cannot_be_read_is_retried_then_the_run_is_reported_failed(make_trigger, clock):
    down = ConnectionError("connection refused")
    runner = ScriptedRunner(polls=[down, RunStatus("running"), down, down, down])
    trigger = make_trigger(runner, launch_attempts=3)
    name = started_run(trigger, runner, drift(0))
    clock.advance(5)
    trigger.step()
    assert load_state(trigger.store, "churn").in_flight.poll_failures == 1
    clock.advance(10)
    trigger.step()  # answers: the failures in a row start over
    assert load_state(trigger.store, "churn").in_flight.poll_failures == 0
    for _ in range(3):
        clock.advance(60)
        trigger.step()
    assert len(runner.polled) == 5
    (finished,) = emitted(trigger, RETRAIN_FINISHED)
    assert finished["data"]["status"] == "failed"
    assert (
        finished["data"]["reason"] == f"could not read the state of run id-{name} after 3 attempts: connection refused"
    )


# -- restarts --------------------------------------------------------------------------------------


def test_a_restarted_trigger_follows_the_run_in_flight_without_starting_it_again(make_trigger, clock):
    first = ScriptedRunner()
    event = drift(0)
    name = started_run(make_trigger(first), first, event)

    again = ScriptedRunner(polls=[RunStatus("succeeded", "churn:7")])
    restarted = make_trigger(again)  # a new process on the same store
    assert restarted.in_flight_models() == ["churn"]
    assert restarted.handle_event(event)["action"] == "duplicate"
    assert restarted.handle_event(drift(1))["action"] == "in_flight"
    restarted.step()
    assert not again.launched and again.polled == [f"id-{name}"]
    assert len(emitted(restarted, RETRAIN_STARTED)) == 1
    (finished,) = emitted(restarted, RETRAIN_FINISHED)
    assert finished["data"]["registered"] == "churn:7" and finished["data"]["run_name"] == name
    assert restarted.in_flight_models() == []


def test_a_restarted_trigger_carries_on_with_the_launch_attempts_already_made(make_trigger, clock):
    first = ScriptedRunner(launches=[ConnectionError("refused")])
    trigger = make_trigger(first, launch_attempts=2)
    trigger.handle_event(drift(0))
    trigger.step()

    again = ScriptedRunner(launches=[TimeoutError("timed out")])
    restarted = make_trigger(again, launch_attempts=2)
    restarted.step()
    assert not again.launched  # the backoff is kept across the restart
    clock.advance(10)
    restarted.step()
    assert len(again.launched) == 1
    (finished,) = emitted(restarted, RETRAIN_FINISHED)
    assert finished["data"]["reason"] == "could not start the run after 2 attempts: TimeoutError: timed out"


def test_an_alert_only_signal_is_recorded_and_starts_no_run(settings, clock):
    from kfloop.names import DATA_QUALITY_VIOLATED, ESTIMATED_QUALITY_DROPPED
    from kfloop.retraining.policy import SignalRule

    runner = ScriptedRunner()
    policy = RetrainPolicy(consecutive_windows=1, rules={"estimated_quality": SignalRule("retrain", 1, 0.7)})
    outbox = Outbox.for_settings(settings, "trigger", None)
    trigger = RetrainTrigger(
        settings, policy, runner, outbox, original_source="sample:churn", clock=clock, new_models=("churn",)
    )
    data = {"model": "churn", "model_version": "1", "status": "alert", "value": 2, "threshold": 0, "direction": "above"}
    alert = make_event(DATA_QUALITY_VIOLATED, "kfloop/monitor", {**data, "window_index": 0}, id="dq0")
    out = trigger.handle_event(alert)
    assert out["action"] == "alert" and out["signal"] == "data_quality" and out["evidence"]["value"] == 2
    trigger.step()
    assert not runner.launched and load_state(trigger.store, "churn").in_flight is None
    assert [e["id"] for e in read_events(trigger.store, "churn")] == ["dq0"]
    assert trigger.status("churn")["alerts"][0]["event"] == "kfloop/monitor#dq0"
    assert trigger.status()["policy"]["rules"]["data_quality"]["action"] == "alert"

    estimate = {**data, "value": 0.6, "threshold": 0.8, "direction": "below", "window_index": 3}
    out = trigger.handle_event(make_event(ESTIMATED_QUALITY_DROPPED, "kfloop/monitor", estimate, id="eq3"))
    assert out["action"] == "start" and out["evidence"]["threshold"] == 0.7
    trigger.step()
    (started,) = emitted(trigger, RETRAIN_STARTED)
    assert started["data"]["evidence"]["signal"] == "estimated_quality"
    assert started["data"]["reason"] == "estimated_quality alert in 1 consecutive window"
