"""Global feature importance as the mean absolute SHAP value of each feature.

The SHAP values come from XGBoost itself (``predict(pred_contribs=True)``, TreeSHAP on the
booster's trees, in margin space), so no extra library is needed and categorical features are
handled natively. For multiclass models the per-class values are summed.
"""

from __future__ import annotations

import numpy as np
import xgboost

from kfloop.errors import DataError
from kfloop.schema import FeatureSchema
from kfloop.training.booster import iteration_range


def feature_importance(
    booster: xgboost.Booster, schema: FeatureSchema, X: np.ndarray, max_rows: int = 2000, seed: int = 0
) -> dict:
    """Mean |SHAP| per feature over (a seeded sample of at most ``max_rows`` of) the encoded rows ``X``."""
    if len(X) == 0:
        raise DataError("feature importance needs at least one row")
    rows = sample_rows(X, max_rows, seed)
    contribs = _contributions(booster, schema, rows)
    # last column is the bias term; multiclass contributions are (rows, classes, features + 1)
    per_feature = np.abs(contribs[..., :-1]).mean(axis=0)
    if per_feature.ndim == 2:
        per_feature = per_feature.sum(axis=0)
    ranked = sorted(zip(schema.names, per_feature.tolist()), key=lambda item: (-item[1], item[0]))
    return {
        "method": "mean_abs_shap",
        "features": [{"name": name, "importance": float(value)} for name, value in ranked],
        "n_rows": int(len(rows)),
    }


def sample_rows(X: np.ndarray, max_rows: int, seed: int = 0) -> np.ndarray:
    """At most ``max_rows`` rows of ``X``, drawn without replacement with a seeded generator, in order."""
    if len(X) <= max_rows:
        return X
    picked = np.sort(np.random.default_rng(seed).choice(len(X), size=max_rows, replace=False))
    return X[picked]


def _contributions(booster: xgboost.Booster, schema: FeatureSchema, X: np.ndarray) -> np.ndarray:
    matrix = xgboost.DMatrix(X, feature_names=schema.names, feature_types=schema.feature_types, enable_categorical=True)
    return booster.predict(matrix, pred_contribs=True, iteration_range=iteration_range(booster))
