"""Baseline statistics and constraints: what the training data looked like, and what a window may not do.

Like SageMaker Model Monitor's ``statistics.json`` / ``constraints.json``, the baseline step writes two
files into the bundle's ``drift/`` folder (``kfloop.store.bundle.STATISTICS_FILE``, ``CONSTRAINTS_FILE``;
both covered by the bundle manifest):

- ``statistics.json`` (what was observed): per feature, in schema order, its kind, row count, missing
  count and rate; numeric: min, max, mean, standard deviation and quantiles; categorical: the share of
  each category. Per model: the prediction distribution, for classifiers the class probabilities
  (binary: the probability of ``classes[1]`` only; multiclass: one per class), for regressors the
  values, as quantiles and a sample of at most ``MAX_PREDICTION_SAMPLE`` values per output, which the
  prediction drift test (``kfloop.monitoring.prediction_drift``) compares windows with; ``rows`` says
  whose predictions they are (the baseline step uses the validation split's, held out from training).
- ``constraints.json`` (what is checked): per feature the largest missing rate a window may have
  (the training rate plus ``missing_tolerance``), the numeric range (training min and max) or the
  category set, the tolerated shares of out-of-range values, unseen categories and rejected requests
  per window, the fewest rows a window needs for a verdict, and the prediction drift test's p-value.
  Edit it to loosen or tighten a check; the statistics are the record of what training saw.

Both files name the schema they were computed for (``schema_sha256``: the SHA-256 of the schema's
canonical JSON) and list its features: ``load_baseline`` refuses, with an error naming the difference,
files that do not match the model's schema (another model's files, a feature added or retyped). A
bundle without either file (registered before they existed) loads as ``None``: the data-quality and
prediction-drift signals are then absent for it, never zero. One file without the other is refused.

Everything here is computed on the encoded matrix (``FeatureSchema.encode_frame``), the form the
transformer's windows have: missing values are NaN, categories are codes into ``Feature.categories``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from kfloop.errors import ConfigError
from kfloop.schema import FeatureSchema
from kfloop.store.bundle import CONSTRAINTS_FILE, STATISTICS_FILE

FORMAT = 1
QUANTILES = (0.0, 0.01, 0.05, 0.25, 0.5, 0.75, 0.95, 0.99, 1.0)
MAX_PREDICTION_SAMPLE = 2000
DEFAULT_MISSING_TOLERANCE = 0.05  # absolute: a window may have 5 points more missing than training
DEFAULT_OUT_OF_RANGE_TOLERANCE = 0.01  # share of a window's values outside the training range
DEFAULT_UNSEEN_TOLERANCE = 0.01  # share of a window's categorical values not seen in training
DEFAULT_REJECTED_TOLERANCE = 0.01  # rejected requests (HTTP 400) per window row
DEFAULT_MIN_ROWS = 50  # fewer rows: insufficient, not a verdict
DEFAULT_PREDICTION_P_VAL = 0.01  # the KS test's threshold, Bonferroni-corrected over outputs


@dataclasses.dataclass(frozen=True)
class FeatureConstraint:
    """What a window's values of one feature may be."""

    name: str
    kind: str
    max_missing_rate: float
    missing_rate: float = 0.0  # the training data's (statistics.json)
    min: float | None = None  # numeric: the training range
    max: float | None = None
    categories: tuple[str, ...] = ()  # categorical: the category set (codes index it)


@dataclasses.dataclass(frozen=True)
class Baseline:
    """A model's statistics and constraints, as loaded from its bundle (or computed by ``compute``)."""

    schema_sha256: str
    task: str
    features: tuple[FeatureConstraint, ...]
    prediction_outputs: tuple[str, ...]  # "value", or the class label each probability column is of
    prediction_sample: np.ndarray  # [rows, len(prediction_outputs)] float64, training predictions
    rows: int  # training rows the statistics describe
    missing_tolerance: float = DEFAULT_MISSING_TOLERANCE
    out_of_range_tolerance: float = DEFAULT_OUT_OF_RANGE_TOLERANCE
    unseen_tolerance: float = DEFAULT_UNSEEN_TOLERANCE
    rejected_tolerance: float = DEFAULT_REJECTED_TOLERANCE
    min_rows: int = DEFAULT_MIN_ROWS
    prediction_p_val: float = DEFAULT_PREDICTION_P_VAL
    statistics: dict = dataclasses.field(default_factory=dict, compare=False, repr=False)

    def columns(self, predictions: Any) -> np.ndarray:
        """Served predictions (per row: class probabilities in class order, or a value) as the
        ``[rows, outputs]`` matrix ``prediction_sample`` is (binary: the probability of ``classes[1]``)."""
        return _columns(self.task, len(self.prediction_outputs), predictions)

    @property
    def constraints(self) -> dict:
        """The ``constraints.json`` document."""
        return {
            "format": FORMAT,
            "schema_sha256": self.schema_sha256,
            "task": self.task,
            "min_rows": self.min_rows,
            "tolerances": {
                "missing_rate": self.missing_tolerance,
                "out_of_range": self.out_of_range_tolerance,
                "unseen_categories": self.unseen_tolerance,
                "rejected_requests": self.rejected_tolerance,
            },
            "prediction_drift": {"test": "ks", "p_val": self.prediction_p_val, "correction": "bonferroni"},
            "features": [_constraint_doc(f) for f in self.features],
        }


def schema_sha256(schema: FeatureSchema) -> str:
    """The SHA-256 of the schema's canonical JSON: what the baseline files name."""
    return hashlib.sha256(json.dumps(schema.to_dict(), sort_keys=True).encode()).hexdigest()


def prediction_columns(schema: FeatureSchema, predictions: Any) -> np.ndarray:
    """Predictions as the predictor answers them (per row: class probabilities in ``schema.classes``
    order, or a value) to the ``[rows, outputs]`` matrix the baseline keeps: binary keeps the
    probability of ``classes[1]`` (also accepted alone, as KServe's stock xgbserver answers it),
    multiclass every class, regression the value."""
    return _columns(schema.task, len(output_names(schema)), predictions)


def _columns(task: str, n_outputs: int, predictions: Any) -> np.ndarray:
    P = np.asarray(predictions, dtype=np.float64)
    if task == "regression":
        if P.ndim == 2 and P.shape[1] == 1:
            P = P[:, 0]
        if P.ndim != 1:
            raise ConfigError(f"regression predictions must be one value per row; got shape {P.shape}")
        return P.reshape(-1, 1)
    if task == "binary" and P.ndim == 1:  # KServe's stock xgbserver answers P(classes[1]) alone
        return P.reshape(-1, 1)
    k = 2 if task == "binary" else n_outputs
    if P.ndim != 2 or P.shape[1] != k:
        raise ConfigError(f"{task} predictions must be {k} class probabilities per row; got shape {P.shape}")
    return P[:, 1:2] if task == "binary" else P


def output_names(schema: FeatureSchema) -> tuple[str, ...]:
    if schema.task == "regression":
        return ("value",)
    return (schema.classes[1],) if schema.task == "binary" else tuple(schema.classes)


def compute(
    schema: FeatureSchema,
    X: np.ndarray,
    predictions: Any,
    *,
    missing_tolerance: float = DEFAULT_MISSING_TOLERANCE,
    out_of_range_tolerance: float = DEFAULT_OUT_OF_RANGE_TOLERANCE,
    unseen_tolerance: float = DEFAULT_UNSEEN_TOLERANCE,
    rejected_tolerance: float = DEFAULT_REJECTED_TOLERANCE,
    min_rows: int = DEFAULT_MIN_ROWS,
    prediction_p_val: float = DEFAULT_PREDICTION_P_VAL,
    seed: int = 0,
    prediction_rows: str = "training",
) -> Baseline:
    """The baseline of training matrix ``X`` (encoded by ``schema``) and the model's ``predictions``
    (on ``X`` itself, or on other rows of the same distribution, named by ``prediction_rows``)."""
    X = np.asarray(X, dtype=np.float64)
    if X.ndim != 2 or X.shape[1] != len(schema.features) or len(X) == 0:
        raise ConfigError(f"baseline needs a non-empty [rows, {len(schema.features)}] matrix; got shape {X.shape}")
    P = prediction_columns(schema, predictions)
    if not len(P):
        raise ConfigError("baseline: no predictions")
    n = len(X)
    features, stats = [], []
    for j, feature in enumerate(schema.features):
        col = X[:, j]
        missing = np.isnan(col)
        rate = float(missing.mean())
        present = col[~missing]
        doc: dict[str, Any] = {
            "name": feature.name,
            "kind": feature.kind,
            "count": n,
            "missing": int(missing.sum()),
            "missing_rate": rate,
        }
        limit = min(1.0, rate + missing_tolerance)
        if feature.kind == "numeric":
            lo, hi = (float(present.min()), float(present.max())) if len(present) else (None, None)
            doc.update(_numeric_stats(present))
            features.append(FeatureConstraint(feature.name, "numeric", limit, rate, lo, hi))
        else:
            counts = np.bincount(present.astype(np.int64), minlength=len(feature.categories))
            doc["frequencies"] = {c: float(counts[i] / n) for i, c in enumerate(feature.categories)}
            features.append(FeatureConstraint(feature.name, "categorical", limit, rate, categories=feature.categories))
        stats.append(doc)
    if len(P) > MAX_PREDICTION_SAMPLE:
        P = P[np.sort(np.random.default_rng(seed).choice(len(P), MAX_PREDICTION_SAMPLE, replace=False))]
    P = np.round(P, 6)
    outputs = output_names(schema)
    statistics = {
        "format": FORMAT,
        "schema_sha256": schema_sha256(schema),
        "task": schema.task,
        "rows": n,
        "features": stats,
        "predictions": {
            "kind": "value" if schema.task == "regression" else "probability",
            "rows": prediction_rows,
            "count": len(predictions),
            "outputs": list(outputs),
            "quantiles": {name: _quantiles(P[:, i]) for i, name in enumerate(outputs)},
            "sample": {name: P[:, i].tolist() for i, name in enumerate(outputs)},
        },
    }
    baseline = Baseline(
        statistics["schema_sha256"],
        schema.task,
        tuple(features),
        outputs,
        P,
        n,
        missing_tolerance,
        out_of_range_tolerance,
        unseen_tolerance,
        rejected_tolerance,
        min_rows,
        prediction_p_val,
        statistics,
    )
    _check_settings(baseline, "baseline")
    return baseline


def save_baseline(baseline: Baseline, folder: str | Path) -> tuple[Path, Path]:
    """Write ``statistics.json`` and ``constraints.json`` into ``folder`` (the detector folder)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    statistics, constraints = folder / STATISTICS_FILE, folder / CONSTRAINTS_FILE
    statistics.write_text(json.dumps(baseline.statistics, indent=1))
    constraints.write_text(json.dumps(baseline.constraints, indent=1))
    return statistics, constraints


def load_baseline(folder: str | Path, schema: FeatureSchema) -> Baseline | None:
    """The baseline in ``folder`` (a bundle's ``drift/``) for a model with ``schema``; None when the
    folder has neither file (an older bundle). ``ConfigError`` naming the problem when the files are
    not valid or do not match ``schema``."""
    folder = Path(folder)
    paths = [folder / STATISTICS_FILE, folder / CONSTRAINTS_FILE]
    present = [p.is_file() for p in paths]
    if not any(present):
        return None
    if not all(present):
        missing = [p.name for p, ok in zip(paths, present) if not ok]
        raise ConfigError(f"{folder} has {paths[present.index(True)].name} but not {missing[0]}: both or neither")
    statistics, constraints = (_read_json(p) for p in paths)
    expected = schema_sha256(schema)
    for path, doc in zip(paths, (statistics, constraints)):
        if doc.get("format") != FORMAT:
            raise ConfigError(f"{path}: format {doc.get('format')!r} is not {FORMAT}")
        if doc.get("schema_sha256") != expected:
            raise ConfigError(
                f"{path} does not match the model's schema: it was computed for schema "
                f"{str(doc.get('schema_sha256'))[:12]}, the model's is {expected[:12]} "
                f"({_schema_difference(doc, schema)})"
            )
        _check_features(path, doc, schema)
    try:
        rates = [float(f["missing_rate"]) for f in statistics["features"]]
        features = tuple(_constraint(f, rate) for f, rate in zip(constraints["features"], rates))
        tol = constraints["tolerances"]
        pred = statistics["predictions"]
        outputs = tuple(str(o) for o in pred["outputs"])
        if outputs != output_names(schema):
            raise ConfigError(
                f"{paths[0]}: prediction outputs {list(outputs)} do not match the model's {list(output_names(schema))}"
            )
        sample = np.column_stack([np.asarray(pred["sample"][o], dtype=np.float64) for o in outputs])
        baseline = Baseline(
            expected,
            schema.task,
            features,
            outputs,
            sample,
            int(statistics["rows"]),
            float(tol["missing_rate"]),
            float(tol["out_of_range"]),
            float(tol["unseen_categories"]),
            float(tol["rejected_requests"]),
            int(constraints["min_rows"]),
            float(constraints["prediction_drift"]["p_val"]),
            statistics,
        )
    except (KeyError, TypeError, ValueError) as e:
        raise ConfigError(f"{folder}: baseline files are not valid ({type(e).__name__}: {e})") from None
    _check_settings(baseline, str(paths[1]))
    return baseline


def _numeric_stats(present: np.ndarray) -> dict:
    if not len(present):
        return {"min": None, "max": None, "mean": None, "std": None, "quantiles": {}}
    return {
        "min": float(present.min()),
        "max": float(present.max()),
        "mean": float(present.mean()),
        "std": float(present.std()),
        "quantiles": _quantiles(present),
    }


def _quantiles(values: np.ndarray) -> dict[str, float]:
    return {f"{q:g}": float(v) for q, v in zip(QUANTILES, np.quantile(values, QUANTILES))}


def _constraint_doc(f: FeatureConstraint) -> dict:
    doc: dict[str, Any] = {"name": f.name, "kind": f.kind, "max_missing_rate": f.max_missing_rate}
    if f.kind == "numeric":
        doc.update(min=f.min, max=f.max)
    else:
        doc["categories"] = list(f.categories)
    return doc


def _constraint(doc: Mapping, missing_rate: float) -> FeatureConstraint:
    numeric = doc["kind"] == "numeric"
    return FeatureConstraint(
        str(doc["name"]),
        str(doc["kind"]),
        float(doc["max_missing_rate"]),
        missing_rate,
        None if not numeric or doc["min"] is None else float(doc["min"]),
        None if not numeric or doc["max"] is None else float(doc["max"]),
        () if numeric else tuple(str(c) for c in doc["categories"]),
    )


def _read_json(path: Path) -> dict:
    try:
        doc = json.loads(path.read_text())
    except ValueError as e:
        raise ConfigError(f"{path} is not valid JSON: {e}") from None
    if not isinstance(doc, dict):
        raise ConfigError(f"{path} is not a JSON object")
    return doc


def _check_features(path: Path, doc: Mapping, schema: FeatureSchema) -> None:
    features = doc.get("features")
    if not isinstance(features, list) or not all(isinstance(f, dict) for f in features):
        raise ConfigError(f"{path}: 'features' must be a list of objects")
    got = [(f.get("name"), f.get("kind")) for f in features]
    want = [(f.name, f.kind) for f in schema.features]
    if got != want:
        raise ConfigError(f"{path}: features {got} do not match the model's schema {want}")


def _schema_difference(doc: Mapping, schema: FeatureSchema) -> str:
    """A short account of how the file's features differ from the schema's, for the error message."""
    got = {f.get("name"): f.get("kind") for f in doc.get("features", []) if isinstance(f, dict)}
    want = {f.name: f.kind for f in schema.features}
    parts = []
    if extra := sorted(set(got) - set(want), key=str):
        parts.append(f"features not in the schema: {extra}")
    if missing := sorted(set(want) - set(got)):
        parts.append(f"schema features not in the file: {missing}")
    if retyped := sorted(n for n in set(got) & set(want) if got[n] != want[n]):
        parts.append(f"kinds differ for {retyped}")
    return "; ".join(parts) or "the categories, classes, target or task differ"


def _check_settings(b: Baseline, where: str) -> None:
    for name in ("missing_tolerance", "out_of_range_tolerance", "unseen_tolerance", "rejected_tolerance"):
        value = getattr(b, name)
        if not (math.isfinite(value) and 0 <= value <= 1):
            raise ConfigError(f"{where}: {name} {value!r} must be a share between 0 and 1")
    if not 0 < b.prediction_p_val < 1:
        raise ConfigError(f"{where}: prediction_drift p_val {b.prediction_p_val!r} must be between 0 and 1")
    if b.min_rows < 1:
        raise ConfigError(f"{where}: min_rows {b.min_rows!r} must be at least 1")
    if b.prediction_sample.ndim != 2 or not len(b.prediction_sample) or not np.isfinite(b.prediction_sample).all():
        raise ConfigError(f"{where}: the training prediction sample must be non-empty finite numbers")
