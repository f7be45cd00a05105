"""WindowLog: every window the drift monitor checks, clean or drifted, leaves one checksummed summary."""

from __future__ import annotations

import pytest

from kfloop import timestamps
from kfloop.errors import ChecksumError, ConfigError
from kfloop.events.outbox import Outbox
from kfloop.monitoring.drift import fit_baseline
from kfloop.monitoring.drift_monitor import DriftMonitor
from kfloop.monitoring.drift_window import WindowedDrift
from kfloop.monitoring.signals import SignalResult
from kfloop.monitoring.window_log import WindowLog, read_windows, window_summary
from kfloop.names import WINDOWS_PREFIX
from kfloop.schema import infer_schema
from kfloop.store.objects import LocalStore
from kfloop.training.samples import churn
from tests.conftest import wait_for

WINDOW = 200


@pytest.fixture(scope="module")
def fitted():
    reference = churn(2000, seed=0)
    schema = infer_schema(reference, "churn")
    return schema, fit_baseline(schema, schema.encode_frame(reference), backend="scipy")


def test_every_checked_window_is_summarized_in_the_store(fitted, tmp_path):
    schema, detector = fitted
    store = LocalStore(tmp_path / "home")
    log = WindowLog(store, batch_size=2, flush_interval_s=60)
    context = {"model": "churn", "model_version": "3", "revision": "canary"}
    monitor = DriftMonitor(
        WindowedDrift(detector, WINDOW),
        Outbox(tmp_path / "outbox", sink_url=None),
        "kfloop/churn",
        context,
        cpu_share=1,
        window_log=log,
    )
    before = timestamps.now()
    clean = [schema.encode_frame(churn(WINDOW, seed=s)) for s in (5, 7)]
    drifted = schema.encode_frame(churn(WINDOW, seed=6, age_shift=15))
    for n, part in enumerate([*clean, drifted], start=1):
        assert monitor.submit(part)
        wait_for(lambda n=n: monitor.windows_checked == n)
    assert monitor.stop()
    assert log.pending == 0 and log.written == 3

    summaries = read_windows(store, "churn")
    assert [s["window_index"] for s in summaries] == [0, 1, 2]
    assert [s["is_drift"] for s in summaries] == [False, False, True]  # clean windows are recorded too
    assert {(s["model"], s["model_version"], s["revision"], s["rows"]) for s in summaries} == {
        ("churn", "3", "canary", WINDOW)
    }
    for s in summaries:
        start, end = timestamps.parse_time(s["start"]), timestamps.parse_time(s["end"])
        assert before <= start <= end <= timestamps.now()
        assert set(s["p_values"]) == set(schema.names)
        assert s["min_p_value"] == min(s["p_values"].values())
        [signal] = [SignalResult.from_dict(d) for d in s["signals"]]
        assert signal.signal == "feature_drift" and signal.alerting == s["is_drift"]
        assert signal.value == s["min_p_value"] and signal.threshold == s["threshold"]
    assert summaries[2]["signals"][0]["evidence"]["features"] == ["age"]
    assert summaries[2]["p_values"]["age"] < 1e-6 < summaries[0]["min_p_value"]
    # two objects: one batch of two, the rest at stop; all under the version's prefix
    keys = store.list(f"{WINDOWS_PREFIX}/churn/3/")
    assert len(keys) == 2 and read_windows(store, "churn", "3") == summaries and read_windows(store, "other") == []


def test_a_changed_summary_object_fails_its_checksum(tmp_path):
    store = LocalStore(tmp_path / "home")
    log = WindowLog(store)
    result = {"data": {"is_drift": 0, "threshold": 0.01, "window_index": 0, "window_size": 5}}
    result["data"]["p_val_by_feature"] = {"age": 0.5, "plan": float("nan")}
    log.add(window_summary(result, {"model": "churn", "model_version": "1"}))
    assert log.flush()
    [key] = store.list(f"{WINDOWS_PREFIX}/")
    [summary] = read_windows(store, "churn")
    assert summary["p_values"] == {"age": 0.5, "plan": None} and summary["min_p_value"] == 0.5
    store.put(key, store.get(key).replace(b"0.5", b"0.9"))
    with pytest.raises(ChecksumError):
        read_windows(store, "churn")


class FailingStore(LocalStore):
    fail = True

    def put(self, key, data):
        if self.fail:
            raise OSError("disk full")
        super().put(key, data)


def test_a_failed_write_keeps_the_batch_for_the_next_attempt(tmp_path):
    store = FailingStore(tmp_path / "home")
    log = WindowLog(store, batch_size=1)
    summary = window_summary(
        {"data": {"is_drift": 1, "threshold": 0.01, "p_val_by_feature": {"age": 0.0}, "window_size": 3}},
        {"model": "churn", "model_version": "1"},
    )
    log.add(summary)
    assert (log.pending, log.errors, log.written) == (1, 1, 0)
    store.fail = False
    assert log.flush() and (log.pending, log.written) == (0, 1)
    assert [s["is_drift"] for s in read_windows(store, "churn")] == [True]


@pytest.mark.parametrize("kwargs", [{"batch_size": 0}, {"flush_interval_s": 0}, {"batch_size": 5, "max_buffer": 2}])
def test_bad_settings_are_refused(tmp_path, kwargs):
    with pytest.raises(ConfigError):
        WindowLog(LocalStore(tmp_path), **kwargs)


def test_summary_marks_windows_with_no_finite_p_value():
    summary = window_summary({"data": {"is_drift": 0, "p_val_by_feature": {"age": None}, "threshold": 0.05}})
    assert summary["min_p_value"] is None and summary["p_values"] == {"age": None}
    assert summary["signals"][0]["value"] is None
