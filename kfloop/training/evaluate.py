"""Evaluation metrics and the quality gate that decides whether a candidate model may be registered.

Metrics are plain JSON values (floats, ints, lists; ``None`` where a metric is undefined, such
as AUC on data with one class), ready for ``metrics.json`` and KFP Metrics artifacts.

The gate compares one primary metric per task (``PRIMARY_METRIC``):

- binary: ``auc`` (ROC AUC; threshold-free and insensitive to class balance),
- multiclass: ``accuracy`` (always defined, even when a class is missing from the evaluation
  data, and a threshold on it is easy to read; macro AUC is reported alongside),
- regression: ``rmse`` (lower is better).

A failed gate is data (``GateDecision.passed``), not an exception.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from typing import Any

import numpy as np
from sklearn import metrics as skm

from kfloop.errors import ConfigError
from kfloop.schema import TASKS, FeatureSchema

PRIMARY_METRIC = {"binary": "auc", "multiclass": "accuracy", "regression": "rmse"}
HIGHER_IS_BETTER = {
    "auc": True,
    "accuracy": True,
    "f1": True,
    "r2": True,
    "log_loss": False,
    "rmse": False,
    "mae": False,
}
MAX_ROC_POINTS = 200


def higher_is_better(metric: str) -> bool:
    """Whether larger values of ``metric`` mean a better model."""
    try:
        return HIGHER_IS_BETTER[metric]
    except KeyError:
        raise ConfigError(f"unknown metric {metric!r}; expected one of {sorted(HIGHER_IS_BETTER)}") from None


def compute_metrics(schema: FeatureSchema, y_true: np.ndarray, pred: np.ndarray) -> dict:
    """Metrics of predictions ``pred`` (as from ``kfloop.training.booster.predict``) against ``y_true``.

    For classification ``y_true`` holds class indices into ``schema.classes``.
    """
    y_true = np.asarray(y_true)
    if schema.task == "regression":
        return _regression(y_true.astype(np.float64), np.asarray(pred, dtype=np.float64))
    return _classification(schema, y_true.astype(int), np.asarray(pred, dtype=np.float64))


def _regression(y: np.ndarray, pred: np.ndarray) -> dict:
    r2 = skm.r2_score(y, pred) if len(y) >= 2 else None
    return {
        "rmse": _num(math.sqrt(skm.mean_squared_error(y, pred))),
        "mae": _num(skm.mean_absolute_error(y, pred)),
        "r2": _num(r2),
        "n": int(len(y)),
    }


def _classification(schema: FeatureSchema, y: np.ndarray, proba: np.ndarray) -> dict:
    k = len(schema.classes)
    proba = proba / proba.sum(axis=1, keepdims=True)
    labels = np.argmax(proba, axis=1)
    binary = schema.task == "binary"
    out: dict[str, Any] = {
        "auc": _num(_binary_auc(y, proba[:, 1]) if binary else _macro_auc(y, proba)),
        "accuracy": _num(skm.accuracy_score(y, labels)),
        "f1": _num(skm.f1_score(y, labels, average="binary" if binary else "macro", zero_division=0)),
        "log_loss": _num(skm.log_loss(y, proba, labels=list(range(k)))),
        "confusion_matrix": skm.confusion_matrix(y, labels, labels=list(range(k))).tolist(),
        "labels": list(schema.classes),
        "n": int(len(y)),
    }
    if binary:
        out["roc"] = roc_curve(y, proba[:, 1])
    return out


def _binary_auc(y: np.ndarray, score: np.ndarray) -> float | None:
    if len(np.unique(y)) < 2:
        return None
    return skm.roc_auc_score(y, score)


def _macro_auc(y: np.ndarray, proba: np.ndarray) -> float | None:
    """One-vs-rest AUC averaged over the classes that have both positives and negatives in ``y``."""
    aucs = [_binary_auc((y == c).astype(int), proba[:, c]) for c in range(proba.shape[1])]
    defined = [a for a in aucs if a is not None]
    return float(np.mean(defined)) if defined else None


def roc_curve(y: np.ndarray, score: np.ndarray, max_points: int = MAX_ROC_POINTS) -> dict | None:
    """ROC points ``{fpr, tpr, thresholds}``, at most ``max_points``; the first threshold (sklearn's
    ``inf``, "predict nothing positive") is written as 1.0 so the curve is valid JSON."""
    if len(np.unique(y)) < 2:
        return None
    fpr, tpr, thresholds = skm.roc_curve(y, score)
    if len(fpr) > max_points:
        keep = np.unique(np.linspace(0, len(fpr) - 1, max_points).round().astype(int))
        fpr, tpr, thresholds = fpr[keep], tpr[keep], thresholds[keep]
    thresholds = np.minimum(thresholds, 1.0)
    return {
        "fpr": [float(v) for v in fpr],
        "tpr": [float(v) for v in tpr],
        "thresholds": [float(v) for v in thresholds],
    }


def _num(value: Any) -> float | None:
    """A plain float, or None for undefined (None/NaN/inf) values."""
    if value is None:
        return None
    value = float(value)
    return value if math.isfinite(value) else None


@dataclasses.dataclass
class GateDecision:
    """Whether a candidate passed the quality gate, on which metric, and why."""

    passed: bool
    metric: str
    candidate: float | None
    production: float | None
    threshold: float
    tolerance: float
    reason: str

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def decide_gate(
    task: str,
    candidate_metrics: Mapping[str, Any],
    production_metrics: Mapping[str, Any] | None,
    threshold: float,
    tolerance: float,
) -> GateDecision:
    """Pass iff the primary metric meets ``threshold`` and is not worse than production by more than
    ``tolerance`` (an absolute difference). Without a production model only the threshold applies."""
    if task not in TASKS:
        raise ConfigError(f"task {task!r} is not one of {TASKS}")
    threshold, tolerance = _finite("threshold", threshold), _finite("tolerance", tolerance)
    if tolerance < 0:
        raise ConfigError(f"gate tolerance {tolerance!r} must be >= 0")
    metric = PRIMARY_METRIC[task]
    higher = higher_is_better(metric)
    candidate = _num(candidate_metrics.get(metric))
    production = _num(production_metrics.get(metric)) if production_metrics else None
    decision = GateDecision(False, metric, candidate, production, threshold, tolerance, "")
    if candidate is None:
        decision.reason = f"candidate {metric} is undefined (got {candidate_metrics.get(metric)!r})"
        return decision
    failures = _threshold_failure(metric, candidate, threshold, higher)
    failures += _production_failure(metric, candidate, production, tolerance, higher)
    decision.passed = not failures
    decision.reason = "; ".join(failures) if failures else _pass_reason(metric, candidate, production, threshold)
    return decision


def _threshold_failure(metric: str, candidate: float, threshold: float, higher: bool) -> list[str]:
    ok = candidate >= threshold if higher else candidate <= threshold
    sign = ">=" if higher else "<="
    return [] if ok else [f"threshold failed: candidate {metric} {candidate:.6g} is not {sign} {threshold:.6g}"]


def _production_failure(
    metric: str, candidate: float, production: float | None, tolerance: float, higher: bool
) -> list[str]:
    if production is None:
        return []
    worse_by = production - candidate if higher else candidate - production
    if worse_by <= tolerance:
        return []
    return [
        f"regression against production: candidate {metric} {candidate:.6g} is worse than production "
        f"{production:.6g} by {worse_by:.6g}, more than the tolerance {tolerance:.6g}"
    ]


def _pass_reason(metric: str, candidate: float, production: float | None, threshold: float) -> str:
    base = f"candidate {metric} {candidate:.6g} meets the threshold {threshold:.6g}"
    if production is None:
        return base + f"; no production {metric} to compare with"
    return base + f" and is within tolerance of production {production:.6g}"


def _finite(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ConfigError(f"gate {name} {value!r} must be a finite number")
    return float(value)
