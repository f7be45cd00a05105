"""Training an XGBoost booster on a feature schema, and the one prediction function.

Features go through ``FeatureSchema.encode_frame`` (the same encoding serving uses), so
categorical columns reach XGBoost as category codes with feature type ``c`` and are split
natively (partition splits, or one-hot splits up to ``max_cat_to_onehot`` categories).
Training uses ``QuantileDMatrix`` with ``tree_method="hist"``, which keeps only the quantised
matrix in memory, so a million rows of ten features trains in a few hundred MB.

With early stopping the saved booster is cut to its best iteration (and records it as the
``best_iteration`` attribute), so every consumer of ``model.ubj``, including a stock KServe
XGBoost server, predicts with the same trees as ``predict``.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import xgboost

from kfloop.errors import ConfigError, DataError, DataQualityError
from kfloop.schema import FeatureSchema

log = logging.getLogger(__name__)

OBJECTIVES = {"binary": "binary:logistic", "multiclass": "multi:softprob", "regression": "reg:squarederror"}
EVAL_METRICS = {"binary": "logloss", "multiclass": "mlogloss", "regression": "rmse"}


@dataclasses.dataclass(frozen=True)
class TrainParams:
    """Booster hyperparameters; ``early_stopping_rounds=0`` disables early stopping, ``nthread=0`` uses all cores."""

    n_estimators: int = 200
    max_depth: int = 6
    learning_rate: float = 0.1
    subsample: float = 1.0
    colsample_bytree: float = 1.0
    min_child_weight: float = 1.0
    reg_lambda: float = 1.0
    early_stopping_rounds: int = 20
    seed: int = 0
    nthread: int = 0
    max_cat_to_onehot: int = 4

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            check_param(f.name, getattr(self, f.name))

    @classmethod
    def from_mapping(cls, doc: Mapping[str, Any] | None) -> TrainParams:
        """Parameters from a mapping (JSON config, pipeline parameters); missing keys keep their defaults."""
        doc = dict(doc or {})
        known = {f.name for f in dataclasses.fields(cls)}
        if unknown := sorted(set(doc) - known):
            raise ConfigError(f"unknown training parameter(s) {unknown}; expected some of {sorted(known)}")
        return cls(**doc)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def booster_params(self, schema: FeatureSchema) -> dict:
        """The parameter dict ``xgboost.train`` takes, for the schema's task."""
        params = {
            "objective": OBJECTIVES[schema.task],
            "eval_metric": EVAL_METRICS[schema.task],
            "tree_method": "hist",
            "max_depth": self.max_depth,
            "eta": self.learning_rate,
            "subsample": self.subsample,
            "colsample_bytree": self.colsample_bytree,
            "min_child_weight": self.min_child_weight,
            "lambda": self.reg_lambda,
            "seed": self.seed,
            "nthread": self.nthread,
            "max_cat_to_onehot": self.max_cat_to_onehot,
        }
        if schema.task == "multiclass":
            params["num_class"] = len(schema.classes)
        return params


# name -> (type, low, high, low inclusive); bounds checked on the value
_RANGES: dict[str, tuple[type, float, float, bool]] = {
    "n_estimators": (int, 1, 100_000, True),
    "max_depth": (int, 1, 64, True),
    "learning_rate": (float, 0.0, 1.0, False),
    "subsample": (float, 0.0, 1.0, False),
    "colsample_bytree": (float, 0.0, 1.0, False),
    "min_child_weight": (float, 0.0, math.inf, True),
    "reg_lambda": (float, 0.0, math.inf, True),
    "early_stopping_rounds": (int, 0, 100_000, True),
    "seed": (int, 0, 2**31 - 1, True),
    "nthread": (int, 0, 4096, True),
    "max_cat_to_onehot": (int, 1, 4096, True),
}


def check_param(name: str, value: Any) -> None:
    """ConfigError unless ``value`` is a valid value of the training parameter ``name``."""
    kind, low, high, low_inclusive = _RANGES[name]
    allowed = (int,) if kind is int else (int, float)
    if isinstance(value, bool) or not isinstance(value, allowed) or not math.isfinite(value):
        raise ConfigError(f"training parameter {name}={value!r} must be a finite {kind.__name__}")
    above_low = value >= low if low_inclusive else value > low
    if not (above_low and value <= high):
        bracket = "[" if low_inclusive else "("
        raise ConfigError(f"training parameter {name}={value!r} is outside {bracket}{low}, {high}]")


def train(
    schema: FeatureSchema, train_df: pd.DataFrame, valid_df: pd.DataFrame | None, params: TrainParams
) -> xgboost.Booster:
    """Train a booster; early stopping watches ``valid_df`` (when given and non-empty)."""
    return fit(schema, *matrices(schema, train_df, valid_df), params)


def matrices(
    schema: FeatureSchema, train_df: pd.DataFrame, valid_df: pd.DataFrame | None
) -> tuple[xgboost.QuantileDMatrix, xgboost.QuantileDMatrix | None]:
    """The training matrix and the validation matrix (None without validation rows), built once
    so that several fits (``kfloop.training.tuning``) share them."""
    dtrain = _matrix(schema, train_df, "training")
    if valid_df is None or not len(valid_df):
        return dtrain, None
    return dtrain, _matrix(schema, valid_df, "validation", ref=dtrain)


def fit(
    schema: FeatureSchema,
    dtrain: xgboost.QuantileDMatrix,
    dvalid: xgboost.QuantileDMatrix | None,
    params: TrainParams,
    callbacks: list[xgboost.callback.TrainingCallback] | None = None,
) -> xgboost.Booster:
    """Train on prepared matrices; early stopping (and ``callbacks``) watch ``dvalid``, named "valid"."""
    evals = [(dvalid, "valid")] if dvalid is not None else []
    stopping = (params.early_stopping_rounds or None) if evals else None
    booster = xgboost.train(
        params.booster_params(schema),
        dtrain,
        num_boost_round=params.n_estimators,
        evals=evals,
        early_stopping_rounds=stopping,
        verbose_eval=False,
        callbacks=callbacks,
    )
    if stopping:
        booster = _cut_to_best(booster)
    log.info("trained %s booster: %d rounds", schema.task, booster.num_boosted_rounds())
    return booster


def _matrix(
    schema: FeatureSchema, df: pd.DataFrame, what: str, ref: xgboost.QuantileDMatrix | None = None
) -> xgboost.QuantileDMatrix:
    if len(df) == 0:
        raise DataError(f"the {what} data has no rows")
    y = schema.encode_labels(df[schema.target])
    if not np.isfinite(y).all():
        raise DataQualityError(schema.target, "finite_labels", f"the {what} data has missing or infinite labels")
    return xgboost.QuantileDMatrix(
        schema.encode_frame(df),
        label=y,
        ref=ref,
        feature_names=schema.names,
        feature_types=schema.feature_types,
        enable_categorical=True,
    )


def _cut_to_best(booster: xgboost.Booster) -> xgboost.Booster:
    best, score = booster.best_iteration, booster.attr("best_score")
    cut = booster[: best + 1]
    cut.set_attr(best_iteration=str(best), best_score=score)
    return cut


def save_model(booster: xgboost.Booster, path: str | Path) -> Path:
    """Write the booster in XGBoost's UBJSON format (the path must end in ``.ubj``)."""
    path = Path(path)
    if path.suffix != ".ubj":
        raise ConfigError(f"model path {str(path)!r} must end in .ubj (XGBoost UBJSON)")
    path.parent.mkdir(parents=True, exist_ok=True)
    booster.save_model(str(path))
    return path


def load_model(path: str | Path) -> xgboost.Booster:
    """Read a booster saved by ``save_model``."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"model file {str(path)!r} does not exist")
    booster = xgboost.Booster()
    try:
        booster.load_model(str(path))
    except xgboost.core.XGBoostError as e:
        raise DataError(f"{str(path)!r} is not an XGBoost model: {e}") from e
    return booster


def predict(booster: xgboost.Booster | DensePredictor, schema: FeatureSchema, X: np.ndarray) -> np.ndarray:
    """Predictions for an encoded matrix: class probabilities ``(n, k)`` (k=2 for binary) or values ``(n,)``."""
    if len(X) == 0:
        return np.empty((0, len(schema.classes)) if schema.task != "regression" else (0,), dtype=np.float32)
    if isinstance(booster, DensePredictor):
        out = booster(X)
    else:
        out = booster.inplace_predict(X, iteration_range=iteration_range(booster))
    if schema.task == "binary":
        return np.column_stack([1.0 - out, out])
    return out


def iteration_range(booster: xgboost.Booster) -> tuple[int, int]:
    """The rounds to predict with: up to the best iteration when early stopping recorded one, else all."""
    best = booster.attr("best_iteration")
    return (0, int(best) + 1) if best is not None else (0, 0)


def predicted_labels(schema: FeatureSchema, pred: np.ndarray) -> np.ndarray:
    """Class indices (argmax of the probabilities) for classification; the values for regression."""
    if schema.task == "regression":
        return pred
    return np.argmax(pred, axis=1)


class DensePredictor:
    """``booster.inplace_predict(X, iteration_range=iteration_range(booster))`` on a dense float32 matrix,
    for serving: the same XGBoost call (``XGBoosterPredictFromDense``, the same configuration), without the
    per-call Python work of ``inplace_predict`` (input type dispatch, imports, feature checks, ctypes
    classes built per call), which costs more than predicting one row (~0.2 ms of ~0.35 ms per call).

    It uses xgboost's ctypes library handle (``xgboost.core._LIB``), so it is tied to the pinned xgboost
    (``tests/training/test_booster.py`` checks it against ``inplace_predict``); where that is missing it
    calls ``inplace_predict``. The answer is a copy (``inplace_predict`` returns a view of a buffer the next
    call overwrites). Not thread-safe, like the booster: one caller at a time."""

    def __init__(self, booster: xgboost.Booster):
        import ctypes
        import json

        self.booster, self._ctypes = booster, ctypes
        self.n_features = booster.num_features()
        begin, end = iteration_range(booster)
        config = {"type": 0, "training": False, "iteration_begin": begin, "iteration_end": end}
        config.update(missing=math.nan, strict_shape=False, cache_id=0)
        self._config = json.dumps(config).encode()  # as inplace_predict's make_jcargs writes it
        try:
            from xgboost.core import _LIB, _check_call, c_bst_ulong

            self._lib, self._check, self._ulong = _LIB, _check_call, c_bst_ulong
            self._predict = _LIB.XGBoosterPredictFromDense
        except (ImportError, AttributeError):  # another xgboost: the public call
            self._predict = None

    def __call__(self, X: np.ndarray) -> np.ndarray:
        X = np.ascontiguousarray(X, dtype=np.float32)
        if self._predict is None or X.ndim != 2 or X.shape[1] != self.n_features or not len(X):
            return np.array(self.booster.inplace_predict(X, iteration_range=iteration_range(self.booster)))
        ctypes = self._ctypes
        interface = b'{"data": [%d, true], "shape": [%d, %d], "strides": null, "typestr": "<f4", "version": 3}' % (
            X.ctypes.data,
            X.shape[0],
            X.shape[1],
        )
        shape, dims, out = ctypes.POINTER(self._ulong)(), self._ulong(), ctypes.POINTER(ctypes.c_float)()
        self._check(
            self._predict(
                self.booster.handle,
                interface,
                self._config,
                ctypes.c_void_p(),
                ctypes.byref(shape),
                ctypes.byref(dims),
                ctypes.byref(out),
            )
        )
        dims_shape = tuple(int(shape[i]) for i in range(dims.value))
        return np.ctypeslib.as_array(out, (math.prod(dims_shape),)).reshape(dims_shape).copy()
