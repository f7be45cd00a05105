"""The event log keeps one copy per event id, in time order, checksummed."""

import pytest

from kfloop.errors import ChecksumError
from kfloop.events.cloudevents import make_event
from kfloop.names import DRIFT_DETECTED, RETRAIN_STARTED
from kfloop.store.event_log import read_events, record_event
from kfloop.store.objects import LocalStore


def test_events_are_kept_once_and_read_in_time_order(tmp_path):
    store = LocalStore(tmp_path)
    late = make_event(RETRAIN_STARTED, "kfloop/trigger", {"run": "r1"})
    early = {**make_event(DRIFT_DETECTED, "kfloop/churn", {"is_drift": 1}), "time": "2020-01-01T00:00:00Z"}
    assert record_event(store, "churn", late)
    assert record_event(store, "churn", early)
    assert not record_event(store, "churn", late)  # delivered twice, kept once
    assert [e["id"] for e in read_events(store, "churn")] == [early["id"], late["id"]]
    assert [e["type"] for e in read_events(store, "churn", types=(DRIFT_DETECTED,))] == [DRIFT_DETECTED]
    assert read_events(store, "other") == []


def test_a_changed_event_fails_its_checksum(tmp_path):
    store = LocalStore(tmp_path)
    event = make_event(DRIFT_DETECTED, "kfloop/churn", {"is_drift": 1})
    record_event(store, "churn", event)
    key = store.list("events/")[0]
    store.put(key, store.get(key).replace(b'"is_drift": 1', b'"is_drift": 0'))
    with pytest.raises(ChecksumError):
        read_events(store, "churn")
