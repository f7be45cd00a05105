"""Reading an analysis step's data: counter deltas, histogram quantiles, captured predictions, quality."""

from __future__ import annotations

import time

import numpy as np
import pandas as pd
import pytest

from kfloop.monitoring.capture import CaptureWriter, capture_record
from kfloop.monitoring.feedback import FeedbackStore
from kfloop.rollout.stats import CaptureReader, histogram_quantile, labeled_quality, quantile, window_delta
from kfloop.schema import infer_schema
from kfloop.serving.local.revision_window import BOUNDS_MS, RevisionWindow, RevisionWindows
from kfloop.store.objects import LocalStore
from kfloop.timestamps import rfc3339


def test_a_quantile_read_from_the_gateway_histogram_is_within_a_bucket_of_the_true_one():
    rng = np.random.default_rng(0)
    latencies = rng.lognormal(np.log(8), 0.6, 5000)
    window = RevisionWindow()
    for ms in latencies:
        window.observe(ms, False)
    doc = window.to_dict()
    for q in (0.5, 0.9, 0.99):
        estimate = histogram_quantile(q, doc["latency_ms"]["bounds"], doc["latency_ms"]["counts"])
        assert estimate == pytest.approx(np.quantile(latencies, q), rel=0.13)
    assert histogram_quantile(0.99, BOUNDS_MS, [0] * (len(BOUNDS_MS) + 1)) is None
    assert histogram_quantile(0.5, [1.0, 2.0], [0, 0, 5]) == 2.0  # above the last bound


def test_window_deltas_count_only_what_happened_since_the_snapshot():
    windows = RevisionWindows()
    for _ in range(10):
        windows.observe("churn", 1, time.perf_counter(), False)
    before = windows.of_model("churn")
    for error in (False, True, True):
        windows.observe("churn", 1, time.perf_counter(), error)
    windows.observe("other", 1, time.perf_counter(), True)
    delta = window_delta(windows.of_model("churn")["1"], before["1"])
    assert (delta["requests"], delta["errors"], sum(delta["counts"])) == (3, 2, 3)
    assert window_delta(None, None)["requests"] == 0
    assert window_delta(before["1"], None)["requests"] == 10  # a revision new to the step
    restarted = window_delta({"requests": 2, "errors": 0, "latency_ms": before["1"]["latency_ms"]}, before["1"])
    assert restarted["requests"] == 2  # a counter that went down started over


def test_nearest_rank_quantile():
    assert quantile(list(range(1, 101)), 0.99) == 99 and quantile([5.0], 0.99) == 5.0 and quantile([], 0.5) is None


def captured(store, version: str, n: int, proba: float, when: str | None = None) -> list[str]:
    ids = [f"r{version}-{i}-{time.monotonic_ns()}" for i in range(n)]
    with CaptureWriter(store, "churn") as writer:
        writer.add(
            [
                capture_record(
                    "churn",
                    version,
                    {"tenure": i, "plan": "basic"},
                    [1 - proba, proba],
                    request_id=f"{rid}:0",
                    time=when,
                )
                for i, rid in enumerate(ids)
            ]
        )
    return ids


def test_capture_reader_returns_a_versions_predictions_since_a_time_and_reads_each_object_once(tmp_path):
    store = LocalStore(tmp_path)
    captured(store, "1", 5, 0.2, when="2020-01-01T00:00:00.000000Z")  # before the step
    since = rfc3339()
    captured(store, "1", 3, 0.3)
    captured(store, "2", 4, 0.9)
    reader = CaptureReader(store, "churn")
    assert reader.predictions(1, since) == [[0.7, 0.3]] * 3
    assert reader.predictions("2", since) == [[pytest.approx(0.1), 0.9]] * 4
    cached = dict(reader._records)
    captured(store, "2", 2, 0.8)
    assert len(reader.predictions(2, since)) == 6
    assert all(reader._records[k] is v for k, v in cached.items())  # old objects were not decoded again


def test_labeled_quality_per_version_since_a_time(tmp_path):
    store = LocalStore(tmp_path)
    frame = pd.DataFrame({"tenure": [1, 2, 3, 4], "plan": ["basic", "pro", "basic", "pro"], "churned": [0, 1, 0, 1]})
    schema = infer_schema(frame, "churned")
    since = rfc3339()
    assert labeled_quality(store, "churn", schema.to_dict(), 1, since) is None  # no labels at all
    good, bad = captured(store, "1", 40, 0.9), captured(store, "2", 40, 0.9)
    labels = FeedbackStore(store)
    labels.add("churn", schema, [{"request_id": f"{rid}:0", "label": 1} for rid in good])
    labels.add("churn", schema, [{"request_id": f"{rid}:0", "label": i % 2} for i, rid in enumerate(bad)])
    assert labeled_quality(store, "churn", schema.to_dict(), 1, since) == {"metric": "accuracy", "value": 1.0, "n": 40}
    assert labeled_quality(store, "churn", schema.to_dict(), 2, since)["value"] == pytest.approx(0.5)
    assert labeled_quality(store, "churn", schema.to_dict(), 3, since) == {"metric": "accuracy", "value": None, "n": 0}


def test_capture_reader_asked_for_an_earlier_time_reads_again(tmp_path):
    store = LocalStore(tmp_path)
    captured(store, "1", 2, 0.2, when="2020-01-01T00:00:00.000000Z")
    captured(store, "1", 3, 0.3, when="2020-01-01T00:00:10.000000Z")
    reader = CaptureReader(store, "churn")
    assert len(reader.predictions(1, "2020-01-01T00:00:05.000000Z")) == 3
    assert len(reader.predictions(1, "2020-01-01T00:00:00.000000Z")) == 5
