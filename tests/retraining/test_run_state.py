"""The run in flight: its moves from launching to finished, the moves it refuses, and its stored form
(the keys and values the trigger has always stored, so an existing store still loads)."""

from __future__ import annotations

import copy

import pytest

from kfloop.errors import DataError
from kfloop.names import DRIFT_DETECTED, trigger_state_key
from kfloop.retraining.policy import load_state, save_state
from kfloop.retraining.run_state import InvalidTransition, RunInFlight, RunPhase
from kfloop.store.objects import LocalStore, get_json, put_json

EVENT = {"id": "e1", "type": DRIFT_DETECTED}

# A model's trigger state as the trigger stored it before the run state was typed: a run that
# failed its first launch, then started, then failed one poll and answered the next.
STORED_STATE = {
    "history": [],
    "in_flight": {
        "arguments": {"model_name": "churn", "source": "sample:churn"},
        "attempts": 1,
        "data": {"rows": None, "source": "sample:churn", "strategy": "original (no registered version yet)"},
        "event_id": "e1",
        "event_type": "io.kfloop.drift.detected",
        "last_error": "ConnectionError: refused",
        "name": "kfloop-churn-e1",
        "next_attempt": 1700000000.8860927,
        "poll_failures": 0,
        "reason": "drift in 1 consecutive windows",
        "run_id": "run-1",
        "started": 1700000000.0,
        "started_iso": "2023-11-14T22:13:20.000000Z",
        "status": "running",
        "strategy": "combined",
        "target": "local",
    },
    "last_finished": None,
    "last_window": None,
    "model": "churn",
    "processed": ["src#e1"],
    "quality": {},
    "streak": 0,
    "stream": "src||",
}
NEW_RUN = {  # the same run as first stored, before its first launch attempt
    "attempts": 0,
    "event_id": "e1",
    "event_type": "io.kfloop.drift.detected",
    "name": "kfloop-churn-e1",
    "next_attempt": 1700000000.0,
    "reason": "drift in 1 consecutive windows",
    "run_id": None,
    "started": 1700000000.0,
    "started_iso": "2023-11-14T22:13:20.000000Z",
    "status": "launching",
    "strategy": "combined",
    "target": "local",
}


def new_run() -> RunInFlight:
    return RunInFlight.start(
        "kfloop-churn-e1", EVENT, "drift in 1 consecutive windows", 1700000000.0, "local", "combined"
    )


def test_a_stored_state_in_the_existing_format_loads_and_round_trips(tmp_path):
    store = LocalStore(tmp_path)
    put_json(store, trigger_state_key("churn"), copy.deepcopy(STORED_STATE))
    state = load_state(store, "churn")
    run = state.in_flight
    assert isinstance(run, RunInFlight) and run.status is RunPhase.RUNNING
    assert (run.run_id, run.attempts, run.poll_failures, run.last_error) == ("run-1", 1, 0, "ConnectionError: refused")
    assert run.data["strategy"] == "original (no registered version yet)"
    save_state(store, state)
    assert get_json(store, trigger_state_key("churn")) == STORED_STATE


def test_a_new_run_is_stored_without_the_keys_it_does_not_know_yet():
    run = new_run()
    assert run.to_dict() == NEW_RUN
    assert RunInFlight.from_dict(NEW_RUN).to_dict() == NEW_RUN


def test_the_moves_of_a_run_from_launching_to_finished():
    run = new_run()
    run.prepare({"source": "s3://data/x.parquet", "rows": 120}, {"source": "s3://data/x.parquet"})
    run.launch_failed("ConnectionError: refused", 1700000010.0)
    assert (run.status, run.attempts, run.next_attempt) == (RunPhase.LAUNCHING, 1, 1700000010.0)
    run.launched("run-1")
    assert run.status is RunPhase.RUNNING and run.run_id == "run-1"
    assert run.started_data("churn") == {
        "model": "churn",
        "run_id": "run-1",
        "run_name": "kfloop-churn-e1",
        "event_id": "e1",
        "target": "local",
        "strategy": "combined",
        "source": "s3://data/x.parquet",
        "rows": 120,
        "arguments": {"source": "s3://data/x.parquet"},
        "reason": "drift in 1 consecutive windows",
    }
    assert not run.poll_answered() and run.poll_failures is None  # nothing failed: nothing to reset
    assert [run.poll_failed(), run.poll_failed()] == [1, 2]
    assert run.poll_answered() and run.poll_failures == 0
    result = run.finish("churn", "succeeded", "churn:2", "", 1700000042.5)
    assert run.status is RunPhase.FINISHED
    assert {k: result[k] for k in ("status", "registered", "reason", "finished_iso", "seconds")} == {
        "status": "succeeded",
        "registered": "churn:2",
        "reason": "",
        "finished_iso": "2023-11-14T22:14:02.500000Z",
        "seconds": 42.5,
    }


def test_a_run_refuses_the_moves_its_phase_does_not_allow():
    run = new_run()
    for move in (run.poll_failed, run.poll_answered, lambda: run.started_data("churn")):
        with pytest.raises(InvalidTransition, match="is launching: only a running run"):
            move()
    with pytest.raises(InvalidTransition, match="without a run id"):
        run.launched("")
    run.launched("run-1")
    with pytest.raises(InvalidTransition, match="is running: only a launching run can be launched"):
        run.launched("run-2")
    with pytest.raises(InvalidTransition, match="fail to launch"):
        run.launch_failed("late", 0.0)
    with pytest.raises(InvalidTransition, match="cannot end 'running'"):
        run.finish("churn", "running", None, "", 0.0)
    run.finish("churn", "failed", None, "boom", 1700000001.0)
    with pytest.raises(InvalidTransition, match="is finished: only a launching or running run can finish"):
        run.finish("churn", "failed", None, "again", 1700000002.0)
    with pytest.raises(InvalidTransition, match="no longer stored"):
        run.to_dict()


@pytest.mark.parametrize(
    "change, message",
    [
        ({"status": "finished"}, "has status 'finished'"),
        ({"status": "paused"}, "has status 'paused'"),
        ({"status": "running"}, "running without a run id"),
        ({"name": None, "started": None}, "lacks"),
    ],
)
def test_a_stored_record_that_is_not_a_run_in_flight_is_refused(change, message):
    doc = {k: v for k, v in {**NEW_RUN, **change}.items() if v is not None or k == "run_id"}
    with pytest.raises(DataError, match=message):
        RunInFlight.from_dict(doc)
