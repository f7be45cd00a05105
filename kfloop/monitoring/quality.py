"""Model quality on served traffic: metrics of labeled predictions, rolling windows, a monitor that
reports degraded windows, and confidence-based estimates of accuracy made before labels arrive.

Inputs are frames like ``kfloop.monitoring.feedback.labeled_frame`` (labels in ``schema.target``, the captured
``prediction``, ``model_version``, ``time``). Captured predictions are what the predictor returned
per row: class probabilities in ``schema.classes`` order for classifiers, values for regressors.

Windows are consecutive runs of ``window`` rows of one model version, ordered by prediction time
and numbered from 0; a trailing run shorter than ``window`` is not a window yet. A label that
arrives late for an old prediction lands in its place in time order, so later windows shift by a
row; the monitor still reports every window index at most once.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator, Mapping, Sequence

import numpy as np
import pandas as pd

from kfloop.errors import ConfigError, DataError
from kfloop.schema import FeatureSchema
from kfloop.timestamps import rfc3339
from kfloop.training.evaluate import compute_metrics, higher_is_better

DEFAULT_METRIC = {"binary": "accuracy", "multiclass": "accuracy", "regression": "rmse"}
CLASSIFICATION_METRICS = ("accuracy", "auc", "f1", "log_loss")
REGRESSION_METRICS = ("rmse", "mae", "r2")


def metric_names(schema: FeatureSchema) -> tuple[str, ...]:
    """The metrics ``quality_metrics`` reports for the schema's task."""
    return REGRESSION_METRICS if schema.task == "regression" else CLASSIFICATION_METRICS


def quality_metrics(schema: FeatureSchema, y_true_labels: Iterable, predictions: Iterable) -> dict:
    """Metrics of captured ``predictions`` against true labels, plus ``n``: accuracy, auc (None when
    only one class is present), f1 and log_loss for classification; rmse, mae and r2 for regression."""
    labels, preds = list(y_true_labels), list(predictions)
    if not labels or len(labels) != len(preds):
        raise DataError(
            f"quality metrics need as many predictions as labels (at least one); "
            f"got {len(preds)} predictions for {len(labels)} labels"
        )
    if schema.task == "regression":
        y, pred = _floats(labels, "labels"), _floats(preds, "predictions")
    else:
        y, pred = schema.encode_labels(labels), probability_matrix(preds, len(schema.classes))
    metrics = compute_metrics(schema, y, pred)
    return {**{name: metrics.get(name) for name in metric_names(schema)}, "n": len(labels)}


def probability_matrix(predictions: Sequence, n_classes: int | None = None) -> np.ndarray:
    """Captured per-row class probabilities as an ``(n, k)`` float matrix, rows normalized to sum to 1."""
    try:
        proba = np.asarray(list(predictions), dtype=np.float64)
    except (TypeError, ValueError) as e:
        raise DataError(f"captured predictions are not rows of class probabilities: {e}") from e
    expected = n_classes or (proba.shape[1] if proba.ndim == 2 else 2)
    if proba.ndim != 2 or proba.shape[1] != expected or proba.shape[1] < 2:
        raise DataError(
            f"captured predictions have shape {proba.shape}: expected one row of {expected} "
            f"class probabilities per prediction"
        )
    return proba / proba.sum(axis=1, keepdims=True)


def _floats(values: list, what: str) -> np.ndarray:
    try:
        return np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError) as e:
        raise DataError(f"regression {what} must be numbers: {e}") from e


def rolling_quality(schema: FeatureSchema, frame: pd.DataFrame, window: int) -> list[dict]:
    """Metrics of every complete window of labeled rows, per model version:
    ``{"model_version", "window_index", "start", "end", "n", <metrics>}``."""
    return [
        {**_span(version, index, rows), **quality_metrics(schema, rows[schema.target], rows["prediction"])}
        for version, index, rows in windows(frame, _window_size(window))
    ]


def windows(
    frame: pd.DataFrame, window: int, after: Mapping[str, int] | None = None
) -> Iterator[tuple[str, int, pd.DataFrame]]:
    """``(model_version, window_index, rows)`` of each complete window whose index is greater than
    ``after[version]`` (all windows without ``after``), versions in numeric order."""
    for version, rows in _by_version(frame):
        for index in range((after or {}).get(version, -1) + 1, len(rows) // window):
            yield version, index, rows.iloc[index * window : (index + 1) * window]


def _by_version(frame: pd.DataFrame) -> Iterator[tuple[str, pd.DataFrame]]:
    if len(frame) == 0:
        return
    missing = [c for c in ("model_version", "time", "prediction") if c not in frame.columns]
    if missing:
        raise DataError(f"quality windows need the columns {missing}; the frame has {list(frame.columns)}")
    frame = frame.assign(
        time=pd.to_datetime(frame["time"], utc=True, format="ISO8601"), model_version=frame["model_version"].astype(str)
    )
    for version in sorted(frame["model_version"].unique(), key=_version_order):
        yield version, frame[frame["model_version"] == version].sort_values("time", kind="stable")


def _version_order(version: str) -> tuple:
    return (0, int(version), "") if version.isdigit() else (1, 0, version)


def _span(version: str, index: int, rows: pd.DataFrame) -> dict:
    return {
        "model_version": version,
        "window_index": index,
        "start": rfc3339(rows["time"].iloc[0]),
        "end": rfc3339(rows["time"].iloc[-1]),
        "n": len(rows),
    }


def _window_size(window: object) -> int:
    if isinstance(window, bool) or not isinstance(window, int) or window < 1:
        raise ConfigError(f"quality window {window!r} must be a positive number of rows")
    return window


class QualityMonitor:
    """Watches labeled traffic and reports each newly completed window whose primary ``metric``
    (default: accuracy for classification, rmse for regression) is worse than ``threshold``:
    below it for higher-is-better metrics, above it for errors. A window whose metric is undefined
    (AUC with one class) is not reported. State: the last window index checked per model version
    (``to_dict``/``from_dict``), so no window is reported twice, also across restarts.
    """

    def __init__(
        self,
        schema: FeatureSchema,
        metric: str | None = None,
        threshold: float | None = None,
        window: int = 200,
        model: str | None = None,
    ):
        self.schema, self.metric = schema, metric or DEFAULT_METRIC[schema.task]
        if self.metric not in metric_names(schema):
            raise ConfigError(
                f"quality metric {self.metric!r} is not one of {list(metric_names(schema))} ({schema.task} task)"
            )
        if isinstance(threshold, bool) or not isinstance(threshold, (int, float)) or not math.isfinite(threshold):
            raise ConfigError(f"quality threshold {threshold!r} must be a finite number")
        self.threshold, self.window, self.model = float(threshold), _window_size(window), model
        self.last_window: dict[str, int] = {}

    def update(self, frame: pd.DataFrame) -> list[dict]:
        """Check the windows of ``frame`` not checked before; the ``io.kfloop.quality.degraded``
        event data of each degraded one."""
        totals = frame["model_version"].astype(str).value_counts() if len(frame) else {}
        degraded = []
        for version, index, rows in windows(frame, self.window, self.last_window):
            self.last_window[version] = index
            value = quality_metrics(self.schema, rows[self.schema.target], rows["prediction"])[self.metric]
            if value is not None and self.is_degraded(value):
                degraded.append(self._record(frame, version, index, rows, value, int(totals[version])))
        return degraded

    def is_degraded(self, value: float) -> bool:
        return value < self.threshold if higher_is_better(self.metric) else value > self.threshold

    def _record(
        self, frame: pd.DataFrame, version: str, index: int, rows: pd.DataFrame, value: float, n_labeled: int
    ) -> dict:
        model = self.model or (str(frame["model"].iloc[0]) if "model" in frame.columns else None)
        span = _span(version, index, rows)
        return {
            "model": model,
            "model_version": version,
            "metric": self.metric,
            "value": value,
            "threshold": self.threshold,
            "window_index": index,
            "window_size": self.window,
            "n_labeled": n_labeled,
            "start": span["start"],
            "end": span["end"],
        }

    def to_dict(self) -> dict:
        return {
            "schema": self.schema.to_dict(),
            "metric": self.metric,
            "threshold": self.threshold,
            "window": self.window,
            "model": self.model,
            "last_window": dict(self.last_window),
        }

    @classmethod
    def from_dict(cls, doc: Mapping, schema: FeatureSchema | None = None) -> QualityMonitor:
        """A monitor from ``to_dict`` output (with ``schema`` instead of the stored one, if given)."""
        monitor = cls(
            schema or FeatureSchema.from_dict(doc["schema"]),
            doc["metric"],
            doc["threshold"],
            int(doc["window"]),
            doc.get("model"),
        )
        monitor.last_window = {str(k): int(v) for k, v in doc.get("last_window", {}).items()}
        return monitor


def estimate_accuracy(probabilities: np.ndarray) -> float:
    """Confidence-based performance estimation (CBPE, as in NannyML): the mean of each row's largest
    class probability. It is the expected accuracy *if the model is calibrated* (a class predicted
    with probability p is right a share p of the time) and the relation between features and labels
    is the one the model learned. Under concept drift the probabilities stay confident while the
    labels change, so the estimate stays high while realized accuracy drops: an early warning for
    data drift and shifting confidence before labels arrive, never a substitute for them. A bundle
    with a calibrator (``signals/calibration.json``) gets the calibrated estimate instead:
    ``kfloop.monitoring.estimation`` (accuracy, F1 and AUC, and the regressors' error)."""
    if len(probabilities) == 0:
        raise DataError("cannot estimate accuracy from zero predictions")
    proba = probability_matrix(probabilities)
    return float(proba.max(axis=1).mean())


def estimated_quality(frame_of_captures: pd.DataFrame | list[dict], window: int) -> list[dict]:
    """Estimated accuracy (``estimate_accuracy``) of every complete window of captured classifier
    predictions, per model version: ``{"model_version", "window_index", "start", "end", "n",
    "estimated_accuracy"}``. Takes capture records (``read_captures``) or a frame of them; needs no labels."""
    frame = frame_of_captures if isinstance(frame_of_captures, pd.DataFrame) else pd.DataFrame(frame_of_captures)
    return [
        {**_span(version, index, rows), "estimated_accuracy": estimate_accuracy(rows["prediction"])}
        for version, index, rows in windows(frame, _window_size(window))
    ]
