"""DriftMonitor: windows checked on its thread, drifted windows as CloudEvents in the outbox,
a full queue drops (and counts) instead of blocking, a failing detector does not stop it."""

from __future__ import annotations

import json
import threading
import time

import numpy as np
import pytest

from kfloop.errors import ConfigError
from kfloop.events.outbox import Outbox
from kfloop.monitoring.drift import fit_baseline
from kfloop.monitoring.drift_monitor import DriftMonitor
from kfloop.monitoring.drift_window import WindowedDrift
from kfloop.schema import infer_schema
from kfloop.training.samples import churn
from tests.conftest import wait_for

WINDOW = 200


@pytest.fixture(scope="module")
def fitted():
    """The churn schema and a scipy detector fitted on 2000 clean rows."""
    reference = churn(2000, seed=0)
    schema = infer_schema(reference, "churn")
    return schema, fit_baseline(schema, schema.encode_frame(reference), backend="scipy")


def test_drifted_window_becomes_an_event_and_a_clean_one_does_not(fitted, tmp_path):
    schema, detector = fitted
    outbox = Outbox(tmp_path / "outbox", sink_url=None)
    context = {"model": "churn", "model_version": "3", "capture_location": "file:///captures/churn/3/"}
    monitor = DriftMonitor(
        WindowedDrift(detector, WINDOW), outbox, "kfloop/churn", context, extensions={"team": "risk"}, cpu_share=1
    )
    clean = schema.encode_frame(churn(WINDOW, seed=5))
    drifted = schema.encode_frame(churn(WINDOW, seed=6, age_shift=15))
    for part in np.array_split(clean, 3) + np.array_split(drifted, 4):
        assert monitor.submit(part)
    wait_for(lambda: monitor.rows_checked == 2 * WINDOW)
    assert monitor.stop()

    assert (monitor.windows_checked, monitor.drift_detected, monitor.rows_dropped) == (2, 1, 0)
    assert set(monitor.last_p_values) == set(schema.names)
    assert monitor.last_p_values["age"] < 1e-6
    [path] = outbox.pending()
    event = json.loads(path.read_bytes())
    assert (event["type"], event["source"], event["subject"], event["team"]) == (
        "io.kfloop.drift.detected",
        "kfloop/churn",
        "churn",
        "risk",
    )
    data = event["data"]
    assert set(data) == {"meta", "data", *context}
    assert data["data"]["is_drift"] == 1 and data["data"]["window_index"] == 1
    assert data["data"]["window_size"] == WINDOW
    assert data["data"]["p_val_by_feature"]["age"] == min(data["data"]["p_val"])
    assert {k: data[k] for k in context} == context


class BlockingDetector:
    """Wraps a detector; ``predict`` waits until ``release`` is set (a slow drift check)."""

    def __init__(self, inner):
        self.inner, self.feature_names, self.backend = inner, inner.feature_names, inner.backend
        self.release, self.started = threading.Event(), threading.Event()

    def predict(self, X):
        self.started.set()
        self.release.wait(10)
        return self.inner.predict(X)


def test_full_queue_drops_and_counts_without_blocking(fitted, tmp_path):
    schema, detector = fitted
    slow = BlockingDetector(detector)
    monitor = DriftMonitor(
        WindowedDrift(slow, 10), Outbox(tmp_path / "o", None), "kfloop/churn", max_pending_rows=30, cpu_share=1
    )
    rows = schema.encode_frame(churn(10, seed=1))
    assert monitor.submit(rows)  # taken by the thread, which blocks in predict
    assert slow.started.wait(5)
    started = time.monotonic()
    accepted = [monitor.submit(rows) for _ in range(5)]
    assert time.monotonic() - started < 0.5
    assert accepted == [True, True, True, False, False]
    assert (monitor.rows_dropped, monitor.pending_rows) == (20, 30)
    slow.release.set()
    wait_for(lambda: monitor.rows_checked == 40)
    assert monitor.stop()
    assert monitor.windows_checked == 4


class FailingDetector:
    feature_names, backend = ["a"], "scipy"

    def predict(self, X):
        raise RuntimeError("detector broke")


def test_a_failing_detector_is_counted_and_the_thread_goes_on(tmp_path):
    monitor = DriftMonitor(WindowedDrift(FailingDetector(), 2), Outbox(tmp_path / "o", None), "kfloop/x", cpu_share=1)
    for _ in range(3):
        monitor.submit(np.zeros((2, 1), dtype=np.float32))
    wait_for(lambda: monitor.rows_checked == 6)
    assert monitor.errors == 3 and monitor.windows_checked == 0
    assert monitor.stop()
    assert not monitor.submit(np.zeros((2, 1), dtype=np.float32))  # stopped: dropped


def test_overrides_cannot_replace_required_attributes(fitted, tmp_path):
    with pytest.raises(ConfigError, match="source"):
        DriftMonitor(
            WindowedDrift(fitted[1], 10), Outbox(tmp_path / "o", None), "kfloop/x", extensions={"source": "elsewhere"}
        )


class SleepyDetector:
    """Wraps a detector; every check takes at least ``seconds`` of wall time, sleeping (no CPU)."""

    def __init__(self, inner, seconds: float):
        self.inner, self.seconds = inner, seconds
        self.feature_names, self.backend = inner.feature_names, inner.backend

    def predict(self, X):
        time.sleep(self.seconds)
        return self.inner.predict(X)


class BusyDetector(SleepyDetector):
    """Wraps a detector; every check uses at least ``seconds`` of its thread's CPU."""

    def predict(self, X):
        began = time.thread_time()
        while time.thread_time() - began < self.seconds:
            pass
        return self.inner.predict(X)


def test_after_a_check_the_monitor_rests_for_its_cpu_share_and_skips_rows(fitted, tmp_path):
    schema, detector = fitted
    monitor = DriftMonitor(
        WindowedDrift(BusyDetector(detector, 0.2), 10),
        Outbox(tmp_path / "o", None),
        "kfloop/churn",
        cpu_share=0.1,
        burst_s=0.5,
    )  # 0.2 s of CPU per check, 0.05 s saved up: with a tenth of a core, 1.5 s for the check and its rest
    rows = schema.encode_frame(churn(10, seed=1))
    began = time.monotonic()
    assert monitor.submit(rows)
    wait_for(lambda: monitor.resting)
    assert monitor.submit(rows)  # served while resting: skipped
    assert (monitor.rows_skipped, monitor.rows_submitted, monitor.windows_checked) == (10, 10, 1)
    wait_for(lambda: not monitor.resting)
    assert time.monotonic() - began >= 1.45  # the rest pays back the CPU the check used beyond the share
    assert monitor.submit(rows)
    wait_for(lambda: monitor.windows_checked == 2)
    assert (monitor.rows_checked, monitor.rows_skipped) == (20, 10)
    assert 0.4 <= monitor.check_cpu_s < 0.4 + 0.2  # what the two checks used, counted for the metrics
    assert monitor.stop()


def test_the_cap_bounds_the_checks_cpu_however_fast_rows_come(fitted, tmp_path):
    schema, detector = fitted
    share = 0.25
    monitor = DriftMonitor(
        WindowedDrift(BusyDetector(detector, 0.02), 10),
        Outbox(tmp_path / "o", None),
        "kfloop/churn",
        max_pending_rows=30,
        cpu_share=share,
    )
    rows = schema.encode_frame(churn(10, seed=1))
    began = time.monotonic()
    while time.monotonic() - began < 1.5:  # 10 rows a millisecond: rows queue up during every check
        monitor.submit(rows)
        time.sleep(0.001)
    elapsed, checked = time.monotonic() - began, monitor.windows_checked
    # every check uses >= 20 ms of CPU: at most a quarter of a core, and the second saved at the start
    assert 0 < checked * 0.02 <= share * (elapsed + 1.0) + 0.02
    assert monitor.rows_skipped > monitor.rows_checked
    assert monitor.stop()


def test_checks_within_the_share_skip_no_row(fitted, tmp_path):
    schema, detector = fitted  # 20 ms of CPU every 200 ms: a tenth of a core, under the quarter allowed
    monitor = DriftMonitor(
        WindowedDrift(BusyDetector(detector, 0.02), 10), Outbox(tmp_path / "o", None), "kfloop/churn", cpu_share=0.25
    )
    rows = schema.encode_frame(churn(10, seed=1))
    for _ in range(8):
        assert monitor.submit(rows)
        time.sleep(0.2)
    wait_for(lambda: monitor.windows_checked == 8)
    assert (monitor.rows_checked, monitor.rows_skipped) == (80, 0)
    assert monitor.stop()


def test_waiting_for_a_core_is_not_counted_against_the_share(fitted, tmp_path):
    schema, detector = fitted  # a check that takes 0.3 s of wall time but almost no CPU: next to no rest
    monitor = DriftMonitor(
        WindowedDrift(SleepyDetector(detector, 0.3), 10), Outbox(tmp_path / "o", None), "kfloop/churn", cpu_share=0.1
    )
    rows = schema.encode_frame(churn(10, seed=1))
    assert monitor.submit(rows)
    wait_for(lambda: monitor.windows_checked == 1)
    time.sleep(0.3)  # by wall time the rest would be 2.7 s
    assert not monitor.resting
    assert monitor.submit(rows)
    wait_for(lambda: monitor.windows_checked == 2)
    assert (monitor.rows_checked, monitor.rows_skipped) == (20, 0)
    assert monitor.stop()


def test_with_the_whole_cpu_every_row_is_checked(fitted, tmp_path):
    schema, detector = fitted
    monitor = DriftMonitor(
        WindowedDrift(SleepyDetector(detector, 0.05), 10), Outbox(tmp_path / "o", None), "kfloop/churn", cpu_share=1
    )
    rows = schema.encode_frame(churn(10, seed=1))
    for _ in range(5):
        assert monitor.submit(rows)
    wait_for(lambda: monitor.windows_checked == 5)
    assert (monitor.rows_checked, monitor.rows_skipped, monitor.resting) == (50, 0, False)
    assert monitor.stop()


@pytest.mark.parametrize("share", [0, -0.5, 1.5])
def test_cpu_share_must_be_a_fraction_of_a_core(tmp_path, share):
    with pytest.raises(ConfigError, match="cpu_share must be in"):
        DriftMonitor(WindowedDrift(FailingDetector(), 2), Outbox(tmp_path / "o", None), "kfloop/x", cpu_share=share)


def test_an_idle_monitor_computes_the_p_values_ahead_within_its_share(tmp_path):
    reference = churn(2000, seed=0)
    schema = infer_schema(reference, "churn")
    ahead, detector = (fit_baseline(schema, schema.encode_frame(reference), backend="scipy") for _ in range(2))
    for _ in ahead.p_value_steps(WINDOW):  # what the monitor's thread is to compute, here
        pass
    [expected] = ahead._ks_p.values()
    began = time.monotonic()
    monitor = DriftMonitor(WindowedDrift(detector, WINDOW), Outbox(tmp_path / "o", sink_url=None), "s", cpu_share=0.5)
    wait_for(lambda: len(next(iter(detector._ks_p.values()), ())) == len(expected), timeout=60)
    elapsed = time.monotonic() - began
    assert monitor.stop()
    assert monitor.windows_checked == 0 and monitor.check_cpu_s > 0
    assert monitor.check_cpu_s <= 0.5 * (elapsed + 1.0) + 0.1  # the share, plus the burst and one step
    assert detector._ks_p == ahead._ks_p
