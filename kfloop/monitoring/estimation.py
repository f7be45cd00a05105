"""Performance estimation without labels, calibrated: NannyML's CBPE for classifiers, DLE for regressors.

**Classifiers (CBPE, confidence-based performance estimation).** A booster's probabilities are not
calibrated (a class predicted with probability 0.8 need not be right 80% of the time), so at
training ``fit_estimator`` fits one isotonic regression per class on the validation split (one for
the positive class of a binary model), the probability of the class against whether the row is of
that class. It is stored as JSON (``signals/calibration.json``: each curve's thresholds and values,
applied with linear interpolation and clipped at the ends, as scikit-learn's ``IsotonicRegression``
with ``out_of_bounds="clip"`` predicts; never pickled). Per window, the calibrated probabilities
``p`` of the captured predictions give the *expected* confusion matrix: a row predicted as class
``c`` (the argmax of the model's own probabilities, what it answered) is a true positive of ``c``
with probability ``p[c]`` and a false positive otherwise, and a false negative of every other class
``j`` with probability ``p[j]``. From it: estimated accuracy (mean ``p`` of the predicted class),
F1 (binary: of the positive class; multiclass: macro) and ROC AUC (every row counted as a positive
with weight ``p`` and as a negative with weight ``1 - p``, NannyML's expected ROC curve).

**Regressors (DLE, direct loss estimation).** Two small boosters (depth 3, 60 rounds) learn, on the
validation split, the absolute and the squared residual from the features and the model's
prediction; they are stored in XGBoost's UBJSON (``signals/residual_abs.ubj``, ``residual_sq.ubj``).
Per window: estimated MAE = mean predicted |residual|, estimated RMSE = sqrt(mean predicted
residual^2).

Both estimates assume the relation between features and labels is the one learned (no concept
drift): they see covariate shift (rows moving to where the model is less sure, or errs more) before
labels arrive, and ``estimate_vs_realized`` shows them next to the realized metrics when labels do.

The ``estimated_quality`` signal (``estimated_quality_signal``) alerts when the estimated primary
metric (``ESTIMATED_METRIC``: accuracy, or MAE for regression) is worse than the reference by more
than a tolerance: ``DEFAULT_MAX_DROP`` (0.05 absolute accuracy) for classifiers,
``DEFAULT_MAX_INCREASE`` (MAE 20% above the reference) for regressors; the reference is the
estimate on the validation split itself. A window with fewer than ``min_rows`` rows is
``insufficient``. A calibrator whose task, classes or features are not the model's is refused at
load (``load_estimator``), and a bundle without one (trained before it existed) gives None: the
signal is then absent, not zero.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import xgboost
from sklearn.isotonic import IsotonicRegression
from sklearn.metrics import roc_auc_score

from kfloop.errors import ConfigError, DataError
from kfloop.monitoring.quality import probability_matrix, quality_metrics, windows
from kfloop.monitoring.signals import SignalResult
from kfloop.schema import FeatureSchema
from kfloop.store import bundle
from kfloop.timestamps import rfc3339
from kfloop.training.booster import load_model

SIGNAL = "estimated_quality"
ESTIMATED_METRIC = {"binary": "accuracy", "multiclass": "accuracy", "regression": "mae"}
DEFAULT_MAX_DROP = 0.05
DEFAULT_MAX_INCREASE = 0.2
DEFAULT_MIN_ROWS = 50
PREDICTION_FEATURE = "__prediction__"  # the residual models' extra input: the model's own prediction
RESIDUAL_PARAMS = {
    "objective": "reg:squarederror",
    "tree_method": "hist",
    "max_depth": 3,
    "eta": 0.1,
    "min_child_weight": 5.0,
    "nthread": 1,
    "seed": 0,
}
RESIDUAL_ROUNDS = 60


@dataclasses.dataclass(frozen=True)
class Curve:
    """An isotonic calibration curve: ``values`` at increasing ``thresholds``, interpolated between them."""

    x: tuple[float, ...]
    y: tuple[float, ...]

    def __call__(self, p: np.ndarray) -> np.ndarray:
        return np.interp(p, self.x, self.y)


class Estimator:
    """A fitted estimator of one model's quality: calibration curves (classifiers) or residual models
    (regressors), with the reference estimate on the validation split."""

    def __init__(
        self,
        schema: FeatureSchema,
        reference: Mapping[str, float | None],
        curves: Mapping[str, Curve] | None = None,
        residual_abs: xgboost.Booster | None = None,
        residual_sq: xgboost.Booster | None = None,
    ):
        self.schema, self.reference = schema, dict(reference)
        self.curves = dict(curves or {})
        self.residual_abs, self.residual_sq = residual_abs, residual_sq

    @property
    def metric(self) -> str:
        return ESTIMATED_METRIC[self.schema.task]

    # -- estimation ----------------------------------------------------------------------------

    def calibrate(self, probabilities: Any) -> np.ndarray:
        """Calibrated class probabilities ``(n, k)`` of captured (or predicted) probabilities."""
        proba = probability_matrix(probabilities, len(self.schema.classes))
        if self.schema.task == "binary":
            positive = np.clip(self.curves[self.schema.classes[1]](proba[:, 1]), 0.0, 1.0)
            return np.column_stack([1.0 - positive, positive])
        out = np.column_stack([self.curves[c](proba[:, i]) for i, c in enumerate(self.schema.classes)])
        sums = out.sum(axis=1, keepdims=True)
        return np.where(sums > 0, out / np.where(sums > 0, sums, 1.0), proba)

    def estimate(self, predictions: Any, X: np.ndarray | None = None) -> dict:
        """Estimated metrics of one window: classifiers from the captured probabilities
        (``accuracy``, ``f1``, ``auc``), regressors from the encoded rows ``X`` and the predicted
        values (``mae``, ``rmse``); plus ``n``."""
        if self.schema.task == "regression":
            if X is None:
                raise DataError("estimating a regressor's error needs the window's encoded rows")
            values = np.asarray(predictions, dtype=np.float64)
            if len(values) != len(X) or len(values) == 0:
                raise DataError(f"{len(values)} predictions for {len(X)} rows: expected as many (at least one)")
            return self._estimate_regression(np.asarray(X, dtype=np.float32), values)
        proba = probability_matrix(predictions, len(self.schema.classes))
        if len(proba) == 0:
            raise DataError("cannot estimate quality from zero predictions")
        return cbpe(self.calibrate(proba), proba)

    def _estimate_regression(self, X: np.ndarray, values: np.ndarray) -> dict:
        matrix = _residual_matrix(self.schema, X, values)
        abs_err = np.maximum(self.residual_abs.predict(matrix), 0.0)
        sq_err = np.maximum(self.residual_sq.predict(matrix), 0.0)
        return {"mae": float(abs_err.mean()), "rmse": float(math.sqrt(sq_err.mean())), "n": len(values)}

    # -- storage -------------------------------------------------------------------------------

    def save(self, root: str | Path) -> Path:
        """Write ``signals/calibration.json`` (and the residual models for a regressor) under ``root``."""
        root = Path(root)
        (root / bundle.SIGNALS_DIR).mkdir(parents=True, exist_ok=True)
        doc: dict[str, Any] = {
            "method": "dle" if self.schema.task == "regression" else "cbpe",
            "task": self.schema.task,
            "classes": list(self.schema.classes),
            "features": self.schema.names,
            "reference": self.reference,
        }
        if self.schema.task == "regression":
            self.residual_abs.save_model(str(root / bundle.RESIDUAL_ABS_FILE))
            self.residual_sq.save_model(str(root / bundle.RESIDUAL_SQ_FILE))
            doc["residual_models"] = {"abs": bundle.RESIDUAL_ABS_FILE, "squared": bundle.RESIDUAL_SQ_FILE}
        else:
            doc["curves"] = {c: {"x": list(v.x), "y": list(v.y)} for c, v in self.curves.items()}
        path = root / bundle.CALIBRATION_FILE
        path.write_text(json.dumps(doc, indent=1, sort_keys=True))
        return path


def fit_estimator(booster: xgboost.Booster, schema: FeatureSchema, valid: pd.DataFrame) -> Estimator:
    """Fit the calibrator (classifiers) or the residual models (regressors) on the validation split."""
    from kfloop.training.booster import predict

    if len(valid) < 2:
        raise DataError(f"fitting the quality estimator needs validation rows; got {len(valid)}")
    X = schema.encode_frame(valid)
    y = schema.encode_labels(valid[schema.target])
    pred = predict(booster, schema, X)
    if schema.task == "regression":
        residual = y.astype(np.float64) - pred.astype(np.float64)
        models = [
            xgboost.train(RESIDUAL_PARAMS, _residual_matrix(schema, X, pred, target), RESIDUAL_ROUNDS)
            for target in (np.abs(residual), residual**2)
        ]
        estimator = Estimator(schema, {}, residual_abs=models[0], residual_sq=models[1])
        estimate = estimator._estimate_regression(X, pred)
    else:
        proba = probability_matrix(pred, len(schema.classes))
        fitted = range(1, 2) if schema.task == "binary" else range(len(schema.classes))
        curves = {schema.classes[c]: _isotonic(proba[:, c], y == c) for c in fitted}
        estimator = Estimator(schema, {}, curves=curves)
        estimate = estimator.estimate(proba)
    estimator.reference = {f"estimated_{k}": v for k, v in estimate.items() if k != "n"} | {"n": len(valid)}
    realized = quality_metrics(schema, valid[schema.target].tolist(), pred.tolist())
    estimator.reference |= {k: v for k, v in realized.items() if k != "n"}
    return estimator


def load_estimator(root: str | Path, schema: FeatureSchema) -> Estimator | None:
    """The bundle's estimator, or None when the bundle has none. Refused (``DataError``) when its task,
    classes or features are not ``schema``'s, or when a file does not match the bundle's manifest."""
    root = Path(root)
    path = root / bundle.CALIBRATION_FILE
    if not path.is_file():
        return None
    try:
        doc = json.loads(path.read_text())
        task, classes, features = doc["task"], tuple(doc["classes"]), list(doc["features"])
    except (ValueError, KeyError, TypeError) as e:
        raise DataError(f"{path} is not a kfloop quality estimator: {e}") from e
    mismatch = [
        f"{what} {theirs!r}, the model's {ours!r}"
        for what, theirs, ours in (
            ("task", task, schema.task),
            ("classes", list(classes), list(schema.classes)),
            ("features", features, schema.names),
        )
        if theirs != ours
    ]
    if mismatch:
        raise DataError(f"{path} does not match the model's schema: {'; '.join(mismatch)}")
    bundle.verify_files(root, [bundle.CALIBRATION_FILE, *doc.get("residual_models", {}).values()])
    reference = doc.get("reference", {})
    if task == "regression":
        models = [_load_booster(root / bundle.RESIDUAL_ABS_FILE), _load_booster(root / bundle.RESIDUAL_SQ_FILE)]
        return Estimator(schema, reference, residual_abs=models[0], residual_sq=models[1])
    expected = classes[1:2] if task == "binary" else classes
    curves = doc.get("curves", {})
    if sorted(curves) != sorted(expected):
        raise DataError(f"{path} has calibration curves for {sorted(curves)}: expected {sorted(expected)}")
    return Estimator(schema, reference, curves={c: _curve(c, curves[c], path) for c in expected})


def estimated_quality_signal(
    estimator: Estimator,
    predictions: Any,
    X: np.ndarray | None = None,
    *,
    threshold: float | None = None,
    min_rows: int = DEFAULT_MIN_ROWS,
) -> SignalResult:
    """The ``estimated_quality`` signal of one window (``threshold`` default: from the reference)."""
    metric = estimator.metric
    higher = metric != "mae"
    if threshold is None:
        reference = estimator.reference.get(f"estimated_{metric}")
        if reference is None:
            raise ConfigError(f"the estimator has no reference {metric}: give the threshold")
        threshold = reference - DEFAULT_MAX_DROP if higher else reference * (1.0 + DEFAULT_MAX_INCREASE)
    n = len(predictions)
    direction = "below" if higher else "above"
    if n < min_rows:
        return SignalResult(
            SIGNAL,
            "insufficient",
            threshold=threshold,
            direction=direction,
            rows=n,
            reason=f"the window has {n} predictions: the estimate needs at least {min_rows}",
        )
    estimate = estimator.estimate(predictions, X)
    value = estimate[metric]
    alert = value < threshold if higher else value > threshold
    return SignalResult(
        SIGNAL,
        "alert" if alert else "ok",
        value=value,
        threshold=threshold,
        direction=direction,
        rows=n,
        evidence={"metric": metric, "estimated": estimate, "reference": estimator.reference},
    )


def estimate_vs_realized(estimator: Estimator, labeled: pd.DataFrame, window: int) -> list[dict]:
    """Per complete window of labeled rows (``kfloop.monitoring.feedback.labeled_frame`` output): the
    estimate made from the captured predictions (as it was before the labels) next to the realized
    metrics: ``{"model_version", "window_index", "start", "end", "n", "estimated", "realized"}``."""
    schema = estimator.schema
    out = []
    for version, index, rows in windows(labeled, window):
        X = schema.encode_frame(rows) if schema.task == "regression" else None
        estimated = estimator.estimate(rows["prediction"].tolist(), X)
        realized = quality_metrics(schema, rows[schema.target].tolist(), rows["prediction"].tolist())
        out.append(
            {
                "model_version": version,
                "window_index": index,
                "start": rfc3339(rows["time"].iloc[0]),
                "end": rfc3339(rows["time"].iloc[-1]),
                "n": len(rows),
                "estimated": {k: v for k, v in estimated.items() if k != "n"},
                "realized": {k: realized.get(k) for k in estimated if k != "n"},
            }
        )
    return out


# -- CBPE ------------------------------------------------------------------------------------


def cbpe(calibrated: np.ndarray, proba: np.ndarray) -> dict:
    """Expected accuracy, F1 and ROC AUC from calibrated probabilities ``(n, k)``; the predicted class
    is the argmax of the model's probabilities ``proba``."""
    n, k = calibrated.shape
    predicted = np.argmax(proba, axis=1)
    accuracy = float(calibrated[np.arange(n), predicted].mean())
    f1s, aucs = [], []
    for c in range(1, 2) if k == 2 else range(k):
        p, chosen = calibrated[:, c], predicted == c
        tp, fp, fn = p[chosen].sum(), (1.0 - p[chosen]).sum(), p[~chosen].sum()
        f1s.append(float(2 * tp / (2 * tp + fp + fn)) if tp + fp + fn > 0 else 0.0)
        aucs.append(_expected_auc(p, proba[:, c]))
    defined = [a for a in aucs if a is not None]
    return {
        "accuracy": accuracy,
        "f1": float(np.mean(f1s)),
        "auc": float(np.mean(defined)) if defined else None,
        "n": int(n),
    }


def _expected_auc(p: np.ndarray, score: np.ndarray) -> float | None:
    if p.sum() <= 0 or (1.0 - p).sum() <= 0:
        return None
    y = np.concatenate([np.ones(len(p)), np.zeros(len(p))])
    return float(roc_auc_score(y, np.concatenate([score, score]), sample_weight=np.concatenate([p, 1.0 - p])))


# -- helpers ---------------------------------------------------------------------------------


def _isotonic(score: np.ndarray, is_class: np.ndarray) -> Curve:
    fitted = IsotonicRegression(y_min=0.0, y_max=1.0, out_of_bounds="clip").fit(score, is_class.astype(float))
    return Curve(tuple(float(v) for v in fitted.X_thresholds_), tuple(float(v) for v in fitted.y_thresholds_))


def _curve(name: str, doc: Any, path: Path) -> Curve:
    try:
        x, y = np.asarray(doc["x"], dtype=float), np.asarray(doc["y"], dtype=float)
    except (KeyError, TypeError, ValueError) as e:
        raise DataError(f"{path}: calibration curve of class {name!r} is malformed: {e}") from e
    ok = x.ndim == 1 and x.shape == y.shape and len(x) >= 1 and np.isfinite(x).all() and np.isfinite(y).all()
    if not ok or (np.diff(x) < 0).any() or (np.diff(y) < 0).any() or y.min() < 0 or y.max() > 1:
        raise DataError(f"{path}: calibration curve of class {name!r} is not increasing probabilities at sorted points")
    return Curve(tuple(x.tolist()), tuple(y.tolist()))


def _residual_matrix(
    schema: FeatureSchema, X: np.ndarray, pred: np.ndarray, label: np.ndarray | None = None
) -> xgboost.DMatrix:
    data = np.column_stack([np.asarray(X, dtype=np.float32), np.asarray(pred, dtype=np.float32)])
    return xgboost.DMatrix(
        data,
        label=label,
        feature_names=[*schema.names, PREDICTION_FEATURE],
        feature_types=[*schema.feature_types, "q"],
        enable_categorical=True,
    )


def _load_booster(path: Path) -> xgboost.Booster:
    if not path.is_file():
        raise DataError(f"{path} is missing: the regressor's estimator needs it")
    return load_model(path)
