"""Model quality on labeled traffic: metrics of captured predictions, rolling windows per version,
a monitor that reports each degraded window once (also after a restart from its state), and
confidence-based accuracy estimates that track realized accuracy only while the model is calibrated."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest
from sklearn import metrics as skm

from kfloop.errors import ConfigError, DataError
from kfloop.monitoring.capture import CaptureWriter, capture_record
from kfloop.monitoring.feedback import FeedbackStore, labeled_frame
from kfloop.monitoring.quality import (
    QualityMonitor,
    estimate_accuracy,
    estimated_quality,
    quality_metrics,
    rolling_quality,
)
from kfloop.schema import infer_schema
from kfloop.store.objects import LocalStore
from kfloop.training.samples import churn

START = pd.Timestamp("2024-05-01T00:00:00Z")


@pytest.fixture(scope="module")
def schema():
    return infer_schema(churn(n_rows=200, seed=0), "churn")


@pytest.fixture(scope="module")
def regression_schema():
    return infer_schema(churn(n_rows=200, seed=0), "monthly_charges", task="regression")


def frame_of(labels, predictions, version="1", start=START, model="churn", target="churn") -> pd.DataFrame:
    """A labeled frame like ``labeled_frame``'s: one row per label, one minute apart."""
    n = len(labels)
    return pd.DataFrame(
        {
            target: list(labels),
            "prediction": list(predictions),
            "model": model,
            "model_version": version,
            "time": [start + pd.Timedelta(minutes=i) for i in range(n)],
        }
    )


def calibrated(n: int, seed: int, drifted: bool = False) -> tuple[list[str], list[list[float]]]:
    """Binary probabilities and labels drawn from them (or, with ``drifted``, from the opposite rule)."""
    rng = np.random.default_rng(seed)
    p1 = rng.beta(0.7, 0.7, n)
    y = rng.random(n) < (1 - p1 if drifted else p1)
    return [str(int(v)) for v in y], np.column_stack([1 - p1, p1]).tolist()


def right_or_wrong(n: int, accuracy: float, seed: int = 0) -> tuple[list[str], list[list[float]]]:
    """Confident predictions of which a share ``accuracy`` (exactly, per 100 rows) are right."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 2, n)
    right = (np.arange(n) % 100) < round(accuracy * 100)
    predicted = np.where(right, labels, 1 - labels)
    return [str(v) for v in labels], [[0.9, 0.1] if p == 0 else [0.1, 0.9] for p in predicted]


def test_classification_metrics_of_captured_probabilities(schema):
    labels, preds = calibrated(500, seed=1)
    got = quality_metrics(schema, labels, preds)
    y, score = np.array(labels).astype(int), np.array(preds)[:, 1]
    assert set(got) == {"accuracy", "auc", "f1", "log_loss", "n"} and got["n"] == 500
    assert got["accuracy"] == pytest.approx(skm.accuracy_score(y, score > 0.5))
    assert got["auc"] == pytest.approx(skm.roc_auc_score(y, score))
    assert got["f1"] == pytest.approx(skm.f1_score(y, score > 0.5))
    assert quality_metrics(schema, ["1", "1"], [[0.2, 0.8], [0.6, 0.4]])["auc"] is None


def test_regression_metrics(regression_schema):
    got = quality_metrics(regression_schema, [1.0, 2.0, 4.0], [1.5, 2.0, 1.0])
    assert got["rmse"] == pytest.approx(math.sqrt((0.25 + 9) / 3)) and got["mae"] == pytest.approx(3.5 / 3)


@pytest.mark.parametrize(
    "labels, preds, message",
    [
        (["1", "0"], [0.8, 0.1], "shape"),
        (["1"], [[0.1, 0.2, 0.7]], "shape"),
        (["1", "0"], [[0.5, 0.5]], "as many"),
        ([], [], "at least one"),
        (["1"], [None], "class probabilities"),
    ],
)
def test_predictions_that_are_not_class_probabilities(schema, labels, preds, message):
    with pytest.raises(DataError, match=message):
        quality_metrics(schema, labels, preds)


def test_rolling_windows_per_version_in_time_order(schema):
    labels, preds = right_or_wrong(230, accuracy=0.8)
    first = frame_of(labels[:130], preds[:130], version="2")
    second = frame_of(labels[130:], preds[130:], version="10", start=START + pd.Timedelta(days=1))
    shuffled = pd.concat([first, second]).sample(frac=1.0, random_state=0)
    windows = rolling_quality(schema, shuffled, window=60)
    assert [(w["model_version"], w["window_index"], w["n"]) for w in windows] == [
        ("2", 0, 60),
        ("2", 1, 60),
        ("10", 0, 60),
    ]
    for w, rows in zip(windows, [first.iloc[:60], first.iloc[60:120], second.iloc[:60]]):
        assert w["accuracy"] == pytest.approx(quality_metrics(schema, rows["churn"], rows["prediction"])["accuracy"])
        assert pd.Timestamp(w["start"]) == rows["time"].iloc[0] and pd.Timestamp(w["end"]) == rows["time"].iloc[-1]
    assert rolling_quality(schema, first.head(59), window=60) == []


def test_monitor_reports_each_bad_window_once_and_survives_a_restart(schema):
    good, bad = right_or_wrong(200, 0.9), right_or_wrong(300, 0.6, seed=1)
    frame = frame_of(good[0] + bad[0], good[1] + bad[1])
    monitor = QualityMonitor(schema, threshold=0.75, window=100)
    assert monitor.update(frame.head(250)) == []
    reports = monitor.update(frame.head(400))
    assert [(r["window_index"], r["value"]) for r in reports] == [(2, pytest.approx(0.6)), (3, pytest.approx(0.6))]
    assert reports[0] | {"start": None, "end": None} == {
        "model": "churn",
        "model_version": "1",
        "metric": "accuracy",
        "value": reports[0]["value"],
        "threshold": 0.75,
        "window_index": 2,
        "window_size": 100,
        "n_labeled": 400,
        "start": None,
        "end": None,
    }
    assert monitor.update(frame.head(400)) == []

    restarted = QualityMonitor.from_dict(json.loads(json.dumps(monitor.to_dict())))
    assert restarted.update(frame.head(499)) == []
    assert [r["window_index"] for r in restarted.update(frame)] == [4]
    assert restarted.to_dict()["last_window"] == {"1": 4}


def test_monitor_with_a_lower_is_better_metric(regression_schema):
    rng = np.random.default_rng(0)
    y = rng.normal(60, 10, 300)
    noise = np.r_[rng.normal(0, 1, 200), rng.normal(0, 10, 100)]
    frame = frame_of(y.tolist(), (y + noise).tolist(), target="monthly_charges")
    reports = QualityMonitor(regression_schema, threshold=3.0, window=100, model="m").update(frame)
    assert [(r["window_index"], r["metric"], r["model"]) for r in reports] == [(2, "rmse", "m")]
    assert reports[0]["value"] > 3.0


def test_monitor_on_labeled_captures_from_a_store(tmp_path, schema):
    store = LocalStore(tmp_path)
    labels, preds = right_or_wrong(220, 0.5)
    records = [
        capture_record(
            "churn",
            "3",
            {},
            p,
            request_id=f"r{i}:0",
            time=(START + pd.Timedelta(minutes=i)).strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
        )
        for i, p in enumerate(preds)
    ]
    with CaptureWriter(store, "churn", flush_interval_s=0.05) as writer:
        writer.add(records)
    FeedbackStore(store).add(
        "churn", schema, [{"request_id": f"r{i}:0", "label": int(v)} for i, v in enumerate(labels)]
    )
    reports = QualityMonitor(schema, "f1", 0.9, window=100).update(labeled_frame(store, "churn", schema))
    assert [(r["model"], r["model_version"], r["window_index"], r["n_labeled"]) for r in reports] == [
        ("churn", "3", 0, 220),
        ("churn", "3", 1, 220),
    ]


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"threshold": None}, "threshold"),
        ({"threshold": math.nan}, "threshold"),
        ({"metric": "rmse", "threshold": 1.0}, "not one of"),
        ({"threshold": 0.5, "window": 0}, "window"),
    ],
)
def test_monitor_settings_are_checked(schema, kwargs, message):
    with pytest.raises(ConfigError, match=message):
        QualityMonitor(schema, **kwargs)


def test_confidence_estimate_tracks_accuracy_of_a_calibrated_model(schema):
    labels, preds = calibrated(6000, seed=2)
    frame = frame_of(labels, preds)
    estimates = estimated_quality(frame.drop(columns=["churn"]), window=2000)
    realized = rolling_quality(schema, frame, window=2000)
    assert len(estimates) == len(realized) == 3
    for estimate, actual in zip(estimates, realized):
        assert abs(estimate["estimated_accuracy"] - actual["accuracy"]) < 0.03
    rng = np.random.default_rng(3)
    proba = rng.dirichlet([0.5, 0.5, 0.5], 5000)
    y = np.array([rng.choice(3, p=p) for p in proba])
    assert abs(estimate_accuracy(proba) - np.mean(proba.argmax(axis=1) == y)) < 0.03


def test_confidence_estimate_misses_concept_drift(schema):
    before, after = calibrated(3000, seed=4), calibrated(3000, seed=5, drifted=True)
    frame = frame_of(before[0] + after[0], before[1] + after[1])
    estimates = [e["estimated_accuracy"] for e in estimated_quality(frame.to_dict("records"), window=3000)]
    realized = [w["accuracy"] for w in rolling_quality(schema, frame, window=3000)]
    assert abs(estimates[1] - estimates[0]) < 0.03 and abs(estimates[0] - realized[0]) < 0.03
    assert realized[1] < realized[0] - 0.3 and estimates[1] - realized[1] > 0.3


def test_confidence_estimate_needs_probabilities():
    with pytest.raises(DataError):
        estimate_accuracy(np.array([]))
    with pytest.raises(DataError, match="shape"):
        estimated_quality([{"model_version": "1", "time": "2024-05-01T00:00:00Z", "prediction": 3.2}], window=1)
