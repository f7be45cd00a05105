"""Multivariate drift: a domain classifier that tries to tell reference rows from window rows.

Per-feature tests (``kfloop.monitoring.drift``) compare one column at a time, so a change in how
features go together (two features whose relation breaks while each keeps its distribution) passes
them. A classifier sees the rows whole: if a small XGBoost model, trained to say "reference" or
"window", separates the two better than chance, the joint distribution moved. This is Evidently's
and NannyML's domain-classifier method.

``multivariate_drift`` draws at most ``max_rows`` rows from each side (seeded), labels them 0
(reference) and 1 (window), and scores every row with a model that did not see it: ``folds``-fold
stratified cross-validation of a small booster (depth 3, 40 rounds, one thread, categorical
features split natively). The signal's value is the out-of-fold ROC AUC: 0.5 means the window
looks like the reference, 1.0 that every row can be told apart. It alerts above ``threshold``
(default ``DEFAULT_THRESHOLD`` 0.7: on clean windows of 200 to 1,000 rows the AUC stays within
about 0.5 +/- 0.05, so 0.7 is far from chance and still well below what a real joint shift gives).
The evidence names the features the classifier used most (total gain over the folds), which is
where to look.

Inputs are the model's encoded matrices (``FeatureSchema.encode_frame`` / ``encode_columns``).
A window or reference with fewer than ``min_rows`` rows gives an ``insufficient`` result. The
reference can be the training rows, or ``reference_rows(bundle)``: the drift detector's reference
(``drift/x_ref.npy``, up to 10,000 training rows), so a job needs only the bundle.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import xgboost
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import StratifiedKFold

from kfloop.errors import ConfigError, DataError
from kfloop.monitoring.drift import X_REF_FILE
from kfloop.monitoring.signals import SignalResult
from kfloop.schema import FeatureSchema
from kfloop.store import bundle

SIGNAL = "multivariate_drift"
DEFAULT_THRESHOLD = 0.7
DEFAULT_MIN_ROWS = 100
DEFAULT_MAX_ROWS = 1000
DEFAULT_FOLDS = 3
TOP_FEATURES = 5
CLASSIFIER_PARAMS = {
    "objective": "binary:logistic",
    "tree_method": "hist",
    "max_depth": 3,
    "eta": 0.2,
    "min_child_weight": 2.0,
    "subsample": 0.8,
    "nthread": 1,
    "max_cat_to_onehot": 4,
}
CLASSIFIER_ROUNDS = 40


def multivariate_drift(
    schema: FeatureSchema,
    reference: np.ndarray,
    window: np.ndarray,
    *,
    threshold: float = DEFAULT_THRESHOLD,
    min_rows: int = DEFAULT_MIN_ROWS,
    max_rows: int = DEFAULT_MAX_ROWS,
    folds: int = DEFAULT_FOLDS,
    seed: int = 0,
) -> SignalResult:
    """The domain classifier's cross-validated AUC between ``reference`` and ``window`` rows."""
    _check_options(threshold, min_rows, max_rows, folds)
    reference, window = _matrix(schema, reference, "reference"), _matrix(schema, window, "window")
    rows = {"reference_rows": int(len(reference)), "window_rows": int(len(window))}
    if len(window) < min_rows or len(reference) < min_rows:
        side = "window" if len(window) < min_rows else "reference"
        return SignalResult(
            SIGNAL,
            "insufficient",
            threshold=threshold,
            direction="above",
            rows=len(window),
            reason=f"the {side} has {rows[side + '_rows']} rows: the domain classifier needs at least {min_rows}",
            evidence=rows,
        )
    rng = np.random.default_rng(seed)
    ref, win = _sample(reference, max_rows, rng), _sample(window, max_rows, rng)
    X = np.vstack([ref, win])
    y = np.concatenate([np.zeros(len(ref)), np.ones(len(win))])
    scores, gains = _out_of_fold(schema, X, y, folds, seed)
    auc = float(roc_auc_score(y, scores))
    total = sum(gains.values()) or 1.0
    top = sorted(gains.items(), key=lambda item: (-item[1], item[0]))[:TOP_FEATURES]
    return SignalResult(
        SIGNAL,
        "alert" if auc > threshold else "ok",
        value=auc,
        threshold=threshold,
        direction="above",
        rows=len(window),
        evidence={
            **rows,
            "sampled_rows": {"reference": int(len(ref)), "window": int(len(win))},
            "folds": folds,
            "top_features": [{"name": name, "gain_share": value / total} for name, value in top],
        },
    )


def reference_rows(root: str | Path, schema: FeatureSchema) -> np.ndarray:
    """The encoded reference rows of a bundle's drift detector (``drift/x_ref.npy``), as
    ``encode_columns`` gives them: the detector's codes for missing values (category k, numeric -inf)
    back to NaN. Checked against the manifest when ``root`` is a bundle."""
    rel = f"{bundle.DRIFT_DIR}/{X_REF_FILE}"
    path = Path(root) / rel
    if not path.is_file():
        raise DataError(f"{path} is missing: the bundle has no drift reference rows")
    bundle.verify_files(root, [rel])
    try:
        X = np.load(path, allow_pickle=False).astype(np.float32)
    except ValueError as e:
        raise DataError(f"{path} is not a plain numeric array: {e}") from None
    X = _matrix(schema, X, "reference")
    for j, feature in enumerate(schema.features):
        col = X[:, j]
        if feature.kind == "categorical":
            col[col >= len(feature.categories)] = np.nan
        else:
            col[np.isinf(col) & (col < 0)] = np.nan
    return X


def _out_of_fold(
    schema: FeatureSchema, X: np.ndarray, y: np.ndarray, folds: int, seed: int
) -> tuple[np.ndarray, dict[str, float]]:
    scores = np.empty(len(y))
    gains = dict.fromkeys(schema.names, 0.0)
    params = {**CLASSIFIER_PARAMS, "seed": seed}
    splitter = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
    for fit_rows, score_rows in splitter.split(X, y):
        booster = xgboost.train(params, _dmatrix(schema, X[fit_rows], y[fit_rows]), CLASSIFIER_ROUNDS)
        scores[score_rows] = booster.predict(_dmatrix(schema, X[score_rows]))
        for name, gain in booster.get_score(importance_type="total_gain").items():
            gains[name] += float(gain)
    return scores, gains


def _dmatrix(schema: FeatureSchema, X: np.ndarray, y: np.ndarray | None = None) -> xgboost.DMatrix:
    return xgboost.DMatrix(
        X, label=y, feature_names=schema.names, feature_types=schema.feature_types, enable_categorical=True
    )


def _sample(X: np.ndarray, max_rows: int, rng: np.random.Generator) -> np.ndarray:
    if len(X) <= max_rows:
        return X
    return X[np.sort(rng.choice(len(X), size=max_rows, replace=False))]


def _matrix(schema: FeatureSchema, X: np.ndarray, what: str) -> np.ndarray:
    X = np.asarray(X, dtype=np.float32)
    if X.ndim != 2 or X.shape[1] != len(schema.features):
        raise DataError(
            f"the {what} matrix has shape {X.shape}: expected (rows, {len(schema.features)}) "
            f"encoded features ({', '.join(schema.names)})"
        )
    return X


def _check_options(threshold: float, min_rows: int, max_rows: int, folds: int) -> None:
    if not 0.5 <= threshold < 1.0:
        raise ConfigError(f"multivariate drift threshold {threshold!r} must be an AUC in [0.5, 1)")
    if not 2 <= folds <= 10:
        raise ConfigError(f"multivariate drift folds {folds!r} must be between 2 and 10")
    if min_rows < folds * 2 or max_rows < min_rows:
        raise ConfigError(
            f"multivariate drift needs max_rows >= min_rows >= 2 x folds; got min_rows {min_rows}, "
            f"max_rows {max_rows}, folds {folds}"
        )
