"""A realistic store for the monitoring report, and an HTML parser that collects what tests check.

The store (``loop_store``) holds what a short run of the loop leaves behind: two registered
versions of ``churn`` (v1 production, v2 staging and trained by a retraining run, whose bundle also
has a CBPE calibrator), two hours of captured requests (v1 only, then v1 stable with v2 as a 20%
canary), every window checked on them by real detectors and baseline constraints (v1's reference:
tenure 0-34; the second hour serves tenure 20-69, so v1's windows drift then, with tenure out of
range and less sure predictions, while v2, whose reference is that traffic, stays clean) as window
summaries with their data-quality and prediction-drift results and, for the drifted ones, drift
events, a retraining run started and finished, and two canary analysis steps. Event times are
relative to now, so they share the axis with registry stages.
"""

from __future__ import annotations

import datetime as dt
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.isotonic import IsotonicRegression

from kfloop.events.cloudevents import make_event
from kfloop.monitoring.capture import CaptureWriter, capture_record
from kfloop.monitoring.constraints import compute, load_baseline, save_baseline
from kfloop.monitoring.data_quality import check_data_quality
from kfloop.monitoring.drift import fit_baseline, save_detector
from kfloop.monitoring.drift_window import WindowedDrift
from kfloop.monitoring.estimation import Curve, Estimator
from kfloop.monitoring.feedback import FeedbackStore
from kfloop.monitoring.prediction_drift import check_prediction_drift
from kfloop.monitoring.window_log import WindowLog, window_summary
from kfloop.names import DRIFT_DETECTED, FEEDBACK, RETRAIN_FINISHED, RETRAIN_STARTED, ROLLOUT_DECISION
from kfloop.schema import FeatureSchema
from kfloop.store import bundle
from kfloop.store.event_log import record_event
from kfloop.store.objects import LocalStore
from kfloop.store.registry import Registry
from tests.fakes.bundles import SCHEMA, make_bundle

START = dt.datetime.now(dt.timezone.utc).replace(microsecond=0) - dt.timedelta(hours=2)
REQUESTS, CANARY_FROM, CANARY_EVERY = 720, 360, 5  # one request every 10 s; canary takes every 5th in hour 2
WINDOW = {"1": 60, "2": 24}  # rows per drift window: v1 checks 11 windows, v2 3


def features(i: int) -> dict:
    """Request ``i``'s customer: tenure 0-34 in the first hour, 20-69 in the second (data drift)."""
    return {"tenure": i % 35 if i < CANARY_FROM else 20 + i % 50, "plan": "basic" if i % 2 else "premium"}


def prediction(i: int, version: str) -> list[float]:
    """Request ``i``'s answer ``[p(0), p(1)]``: class ``i % 2`` with probability 0.8, except v1's in the
    second hour (on tenure it never saw), which is only 0.6 sure (prediction drift)."""
    sure, unsure = (0.6, 0.4) if version == "1" and i >= CANARY_FROM else (0.8, 0.2)
    return [unsure, sure] if i % 2 else [sure, unsure]


def bundle_with_reference(root: Path, auc: float, tenure: range, calibrated: bool = False) -> Path:
    """``make_bundle`` with a drift reference (scipy backend) of tenure uniform over ``tenure``, the
    baseline statistics and constraints of those rows (their predictions as ``prediction`` gives them
    in the first hour) and, when ``calibrated``, a CBPE calibrator fitted on a validation split where
    the class predicted with probability 0.8 is right 90% of the time."""
    make_bundle(root, auc)
    rng = np.random.default_rng(len(tenure))
    frame = pd.DataFrame(
        {"tenure": rng.integers(tenure.start, tenure.stop, 2000), "plan": rng.choice(["basic", "premium"], 2000)}
    )
    schema = FeatureSchema.from_dict(SCHEMA)
    X = schema.encode_frame(frame)
    save_detector(fit_baseline(schema, X, backend="scipy"), root / bundle.DRIFT_DIR)
    save_baseline(compute(schema, X, [prediction(i, "2") for i in range(len(X))]), root / bundle.DRIFT_DIR)
    if calibrated:
        p1 = np.array([prediction(i, "2")[1] for i in range(1000)])
        positive = np.where(np.arange(1000) // 2 % 10 == 0, p1 < 0.5, p1 > 0.5)  # one in ten of each is wrong
        fitted = IsotonicRegression(y_min=0.0, y_max=1.0, out_of_bounds="clip").fit(p1, positive.astype(float))
        curve = Curve(tuple(fitted.X_thresholds_.tolist()), tuple(fitted.y_thresholds_.tolist()))
        estimator = Estimator(schema, {}, curves={"1": curve})
        estimator.reference = {"estimated_accuracy": estimator.estimate(np.column_stack([1 - p1, p1]))["accuracy"]}
        estimator.save(root)
    bundle.write_manifest(root)
    return root


def check_windows(store, registry, rows: list[tuple[str, str, str]]) -> list[dict]:
    """Every window of each version's served rows checked by its registered reference and baseline, as
    the transformer does: feature drift, data quality and prediction drift in the window log's
    summaries (v1's second-hour windows: tenure out of range and less sure predictions; v2's windows
    of 24 rows are too few for the baseline's checks), a drift event for each drifted window."""
    from kfloop.monitoring.drift import load_detector

    schema, log, summaries = FeatureSchema.from_dict(SCHEMA), WindowLog(store), []
    for version in ("1", "2"):
        record = registry.get("churn", int(version))
        folder = store.root / record.bundle_key / bundle.DRIFT_DIR
        windowed = WindowedDrift(load_detector(folder), WINDOW[version])
        baseline = load_baseline(folder, schema)
        served = [(i, when) for i, (when, v, _) in enumerate(rows) if v == version]
        for start in range(0, len(served) - WINDOW[version] + 1, WINDOW[version]):
            part = served[start : start + WINDOW[version]]
            X = schema.encode_frame(pd.DataFrame([features(i) for i, _ in part]))
            [result] = windowed.add(X)
            result["data"]["window_start"], result["data"]["window_end"] = part[0][1], part[-1][1]
            context = {"model": "churn", "model_version": version, "revision": "stable" if version == "1" else "canary"}
            predictions = [prediction(i, version) for i, _ in part]
            signals = [check_data_quality(baseline, X), check_prediction_drift(baseline, predictions)]
            summary = window_summary(result, context, signals)
            log.add(summary)
            summaries.append(summary)
            if summary["is_drift"]:
                event = {**make_event(DRIFT_DETECTED, "/kfloop/churn/transformer", {**result, **context}, "churn")}
                assert record_event(store, "churn", {**event, "time": part[-1][1]})
    assert log.flush()
    return summaries


def at(minutes: float) -> str:
    return (START + dt.timedelta(minutes=minutes)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def record(store, model: str, type_: str, source: str, data: dict, minutes: float) -> dict:
    event = {**make_event(type_, source, data, subject=model), "time": at(minutes)}
    assert record_event(store, model, event)
    return event


def drift_data(window: int, p_tenure: float, p_plan: float, version: str = "1", is_drift: int = 1) -> dict:
    """An ``io.kfloop.drift.detected`` payload as the drift monitor builds it."""
    return {
        "meta": {"name": "TabularDrift", "detector_type": "drift"},
        "data": {
            "is_drift": is_drift,
            "p_val": [p_tenure, p_plan],
            "threshold": 0.025,
            "distance": [0.3, 0.1],
            "p_val_by_feature": {"tenure": p_tenure, "plan": p_plan},
            "window_index": window,
            "window_size": 100,
        },
        "model": "churn",
        "model_version": version,
    }


def write_captures(store, model: str, rows: list[tuple[str, str, str]]) -> None:
    """Capture records from (time, version, revision) triples; request ``i`` answers ``prediction(i, version)``."""
    with CaptureWriter(store, model, batch_size=10_000, flush_interval_s=60) as writer:
        writer.add(
            [
                capture_record(
                    model,
                    version,
                    features(i),
                    prediction(i, version),
                    revision=revision,
                    time=when,
                    request_id=f"r{i}:0",
                )
                for i, (when, version, revision) in enumerate(rows)
            ]
        )


def traffic_rows() -> list[tuple[str, str, str]]:
    rows = []
    for i in range(REQUESTS):
        canary = i >= CANARY_FROM and i % CANARY_EVERY == 0
        rows.append((at(i / 6), "2" if canary else "1", "canary" if canary else "stable"))
    return rows


def add_labels(store, rows: list[tuple[str, str, str]]) -> int:
    """Labels for every second request of v1 and every v2 request: v1 gets worse over time (concept
    drift), v2 stays good. Returns how many were stored."""
    labels, seen = [], {"1": 0, "2": 0}
    for i, (when, version, _) in enumerate(rows):
        if i % 2 and version == "1":
            continue
        n, seen[version] = seen[version], seen[version] + 1
        errors_in_ten = 1 if version == "2" else 1 + 4 * i // REQUESTS  # v1: 10% wrong, then up to 40%
        wrong = n % 10 < errors_in_ten
        labels.append({"request_id": f"r{i}:0", "label": str((i % 2) ^ wrong), "time": when})
    FeedbackStore(store).add("churn", FeatureSchema.from_dict(SCHEMA), labels)
    return len(labels)


FEEDBACK_POSTS = [(74 + k, 3) for k in range(6)] + [(100, 5), (101, 7)]  # (minutes, labels in the post)


def build_loop_store(root: Path) -> LocalStore:
    store = LocalStore(root / "home")
    registry = Registry(store)
    registry.register(
        "churn",
        bundle_with_reference(root / "b1", 0.88, range(0, 35)),
        lineage={
            "data_uri": "s3://kfloop/data/churn-2024-04.parquet",
            "data_sha256": "a1" * 32,
            "pipeline_run_name": "kfloop-churn-initial",
            "parent_version": None,
        },
    )
    registry.set_stage("churn", 1, "production", "deployed to local")
    for minutes, n in FEEDBACK_POSTS:  # six posts after the first drift event, two between the third and fourth
        record(
            store,
            "churn",
            FEEDBACK,
            "/kfloop/trigger/feedback",
            {"model": "churn", "labels": [{"request_id": f"r{minutes}:{i}", "label": 1} for i in range(n)]},
            minutes,
        )
    record(
        store,
        "churn",
        RETRAIN_STARTED,
        "/kfloop/trigger",
        {"run_name": "kfloop-churn-retrain-1", "reason": "drift"},
        45,
    )
    registry.register(
        "churn",
        bundle_with_reference(root / "b2", 0.91, range(20, 70), calibrated=True),
        lineage={
            "data_uri": "s3://kfloop/data/churn-2024-05.parquet",
            "data_sha256": "b2" * 32,
            "pipeline_run_name": "kfloop-churn-retrain-1",
            "parent_version": 1,
        },
    )
    record(
        store,
        "churn",
        RETRAIN_FINISHED,
        "/kfloop/trigger",
        {"run_name": "kfloop-churn-retrain-1", "state": "SUCCEEDED", "version": 2},
        55,
    )
    for step, (percent, minutes) in enumerate([(10, 70), (20, 90)], start=1):
        record(
            store,
            "churn",
            ROLLOUT_DECISION,
            "/kfloop/rollout",
            {
                "canary_version": 2,
                "stable_version": 1,
                "step": step,
                "percent": percent,
                "verdict": "continue",
                "reason": "canary within limits",
                "metrics": [
                    {"metric": "error_rate", "stable": 0.010, "canary": 0.012, "threshold": 0.05, "passed": True},
                    {"metric": "latency_p95_ms", "stable": 12.0, "canary": 13.5, "threshold": 50, "passed": True},
                ],
            },
            minutes,
        )
    rows = traffic_rows()
    write_captures(store, "churn", rows)
    add_labels(store, rows)
    check_windows(store, registry, rows)
    return store


class Page(HTMLParser):
    """The parts of a page the tests look at: tags, ids, headings, tables (by id), images, text."""

    def __init__(self, text: str):
        super().__init__(convert_charrefs=True)
        self.tags: list[tuple[str, dict]] = []
        self.headings: list[str] = []
        self.tables: dict[str, list[list[str]]] = {}
        self.scripts: list[str] = []
        self.text: list[str] = []
        self._heading = self._table = self._cell = self._script = None
        self.feed(text)
        self.close()

    @property
    def ids(self) -> list[str]:
        return [attrs["id"] for _, attrs in self.tags if "id" in attrs]

    @property
    def images(self) -> list[dict]:
        return [attrs for tag, attrs in self.tags if tag == "img"]

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        self.tags.append((tag, attrs))
        if tag in ("h1", "h2", "h3"):
            self._heading = []
        elif tag == "table":
            self._table = self.tables.setdefault(attrs.get("id", f"table-{len(self.tables)}"), [])
        elif tag == "tr" and self._table is not None:
            self._table.append([])
        elif tag in ("td", "th"):
            self._cell = []
        elif tag == "script":
            self._script = []

    def handle_endtag(self, tag):
        if tag in ("h1", "h2", "h3") and self._heading is not None:
            self.headings.append("".join(self._heading).strip())
            self._heading = None
        elif tag == "table":
            self._table = None
        elif tag in ("td", "th") and self._cell is not None and self._table is not None:
            self._table[-1].append(" ".join("".join(self._cell).split()))
            self._cell = None
        elif tag == "script" and self._script is not None:
            self.scripts.append("".join(self._script))
            self._script = None

    def handle_data(self, data):
        for part in (self._heading, self._cell, self._script):
            if part is not None:
                part.append(data)
        if self._script is None:
            self.text.append(data)


@pytest.fixture(scope="session")
def loop_store(tmp_path_factory) -> LocalStore:
    return build_loop_store(tmp_path_factory.mktemp("loop"))
