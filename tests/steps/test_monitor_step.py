"""The monitoring step over real captures (written by the batch job) and real labels (the feedback
store): windows per version, quality on the labels that arrived, the report's files, and events that
the retraining trigger takes as it takes the live path's: two drifted windows in a row start a run, a
second run of the job over the same range is a duplicate."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from kfloop.batch.job import BatchOptions, run_batch
from kfloop.config import Settings
from kfloop.events.outbox import Outbox
from kfloop.monitoring.feedback import FeedbackStore
from kfloop.names import DRIFT_DETECTED, MULTIVARIATE_DRIFT_DETECTED, QUALITY_DEGRADED
from kfloop.retraining.policy import RetrainPolicy
from kfloop.retraining.trigger import RetrainTrigger
from kfloop.steps.monitor import MonitorOptions, resolve_range, run_monitoring
from kfloop.store.objects import open_store
from tests.batch.conftest import register_churn
from tests.fakes.bundles import churn_frame


class NoRunner:
    """The trigger only decides here: nothing is launched."""

    target = "none"


@pytest.fixture
def served(tmp_path):
    """churn:1 with 600 clean then 600 drifted captured rows; the drifted ones labeled, half wrongly."""
    settings = Settings(home=tmp_path / "home")
    _, schema = register_churn(settings, tmp_path / "bundle")
    for name, frame in (("clean", churn_frame(600, seed=1)), ("drifted", churn_frame(600, seed=2))):
        if name == "drifted":
            frame = frame.assign(tenure=frame["tenure"] + 40)
        frame.to_parquet(tmp_path / f"{name}.parquet")
        options = BatchOptions("churn:1", str(tmp_path / f"{name}.parquet"), str(tmp_path / f"{name}.csv"), drift=False)
        run_batch(options, settings, progress=lambda line: None)
    predicted = pd.read_csv(tmp_path / "drifted.csv")
    labels = [
        {"request_id": rid, "label": str(int(p) if i % 2 else 1 - int(p))}
        for i, (rid, p) in enumerate(zip(predicted["request_id"], predicted["prediction"]))
    ]
    FeedbackStore(open_store(settings)).add("churn", schema, labels)
    return settings


def test_the_step_checks_every_window_with_labels_and_writes_the_report(served, tmp_path):
    options = MonitorOptions("churn", since="1h", window_rows=300, quality_threshold=0.7, emit=False)
    summary = run_monitoring(served, options, tmp_path / "out", progress=lambda line: None)
    assert [w["rows"] for w in summary["windows"]] == [300] * 4
    for signal in ("feature_drift", "multivariate_drift"):
        statuses = [s["status"] for w in summary["windows"] for s in w["signals"] if s["signal"] == signal]
        assert statuses == ["ok", "ok", "alert", "alert"], signal
    quality = [(w["window_index"], s) for w in summary["windows"] for s in w["signals"] if s["signal"] == "quality"]
    assert [i for i, _ in quality] == [2, 3]  # only the labeled windows have a quality result
    assert all(s["status"] == "alert" and s["value"] == pytest.approx(0.5, abs=0.01) for _, s in quality)
    assert "estimated_quality" not in summary["counts"]  # the bundle has no test accuracy to derive it from
    written = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert written["counts"] == summary["counts"] and summary["events"]["emitted"] == 0
    assert "| quality | 0 | 2 | 0 |" in (tmp_path / "out" / "report.md").read_text()


def test_the_trigger_takes_the_steps_events_as_the_live_paths(served):
    options = MonitorOptions("churn", since="1h", window_rows=300, quality_threshold=0.7)
    summary = run_monitoring(served, options, progress=lambda line: None)
    assert summary["events"]["emitted"] == 6 and summary["events"]["pending"] == 6  # no sink: kept in the outbox
    outbox = Outbox.for_settings(served, "monitor", None)
    events = [json.loads(path.read_bytes()) for path in outbox.pending()]
    per_window = [DRIFT_DETECTED, MULTIVARIATE_DRIFT_DETECTED, QUALITY_DEGRADED]  # the drifted windows 2 and 3
    assert [e["type"] for e in events] == per_window * 2
    policy = RetrainPolicy(consecutive_windows=2, cooldown_seconds=0)
    trigger = RetrainTrigger(served, policy, NoRunner(), Outbox.for_settings(served, "trigger", None))
    decisions = [trigger.handle_event(event) for event in events]
    # window 2: drift waits for a second window, the domain classifier only alerts (the default policy),
    # quality starts at once (and resets the drift streak)
    assert [d["action"] for d in decisions] == ["waiting", "alert", "start", "waiting", "alert", "in_flight"]
    assert decisions[2]["evidence"]["details"] == {"metric": "accuracy"} and decisions[2]["evidence"]["value"] < 0.7
    assert [d["evidence"]["window_index"] for d in decisions] == [2, 2, 2, 3, 3, 3]
    again = run_monitoring(served, options, progress=lambda line: None)["events"]["ids"]
    assert again == summary["events"]["ids"]
    assert trigger.handle_event(events[0])["action"] == "duplicate"


def test_durations_and_times_give_the_range():
    start, end = resolve_range("2026-05-01T00:00:00Z", "2026-05-02")
    assert (end - start).days == 1
    start, end = resolve_range("", "")
    assert round((end - start).total_seconds()) == 86400


def test_replicas_that_each_see_part_of_the_traffic_are_checked_together(tmp_path):
    """Two transformer replicas (two capture writers, as two pods write) each capture 300 drifted rows:
    neither fills a live window of 500, the job checks their 600 rows as one version's window."""
    from kfloop.monitoring.capture import CaptureWriter, capture_record

    settings = Settings(home=tmp_path / "home")
    register_churn(settings, tmp_path / "bundle")
    frame = churn_frame(600, seed=9).assign(tenure=lambda f: f["tenure"] + 40).drop(columns=["churned"])
    rows = frame.astype(object).where(frame.notna(), None).to_dict("records")
    for replica in (0, 1):
        with CaptureWriter(open_store(settings), "churn", batch_size=100) as writer:
            writer.add(
                capture_record("churn", "1", row, [0.5, 0.5], revision="stable", request_id=f"pod{replica}-{i}")
                for i, row in enumerate(rows[replica::2])
            )
    options = MonitorOptions("churn", since="1h", window_rows=500, emit=False)
    summary = run_monitoring(settings, options, progress=lambda line: None)
    (window,) = summary["windows"]
    assert window["rows"] == 600 and not window["pooled"] and window["revisions"] == ["stable"]
    (drift,) = [s for s in window["signals"] if s["signal"] == "feature_drift"]
    assert drift["status"] == "alert" and drift["evidence"]["drifted"] == ["tenure"]
