"""Feature-attribution drift: do the features that drive the served scores still match training's?

As SageMaker Model Monitor's feature-attribution monitor: the attribution of a feature is its mean
absolute SHAP value over a set of rows (``kfloop.training.explain.feature_importance``: XGBoost's
own TreeSHAP, ``predict(pred_contribs=True)``; per-class values summed for multiclass). At
training the signal-baselines step computes it on the validation split and stores it in the bundle
(``signals/attribution.json``, listed in the manifest); each window computes it on a sample of the
served rows, and the two rankings are compared with NDCG:

    NDCG = DCG / iDCG,  DCG = sum_i a(F'_i) / log2(i + 1),  iDCG = sum_i a(F_i) / log2(i + 1)

where ``F'`` is the features ranked by the window's attribution, ``F`` ranked by training's, and
``a(f)`` the *training* attribution of ``f`` (positions from 1). It is 1 when the ranking is the
same, and falls as features that mattered at training fall down the window's ranking. It alerts
below ``threshold`` (default 0.9, SageMaker's). A window with fewer than ``min_rows`` rows is
``insufficient``; the SHAP pass uses at most ``max_rows`` of its rows (seeded sample).
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import xgboost

from kfloop.errors import ConfigError, DataError
from kfloop.monitoring.signals import SignalResult
from kfloop.schema import FeatureSchema
from kfloop.store import bundle
from kfloop.training.explain import feature_importance

SIGNAL = "attribution_drift"
DEFAULT_THRESHOLD = 0.9
DEFAULT_MIN_ROWS = 100
DEFAULT_MAX_ROWS = 500


def attribution_baseline(booster: xgboost.Booster, schema: FeatureSchema, X: np.ndarray, max_rows: int = 2000) -> dict:
    """The training-time attribution: ``feature_importance`` of the encoded rows ``X`` (validation split)."""
    return {**feature_importance(booster, schema, X, max_rows=max_rows), "schema_features": schema.names}


def save_attribution_baseline(doc: dict, root: str | Path) -> Path:
    path = Path(root) / bundle.ATTRIBUTION_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(doc, indent=1, sort_keys=True))
    return path


def load_attribution_baseline(root: str | Path, schema: FeatureSchema) -> dict | None:
    """The bundle's training attribution, or None when the bundle has none (trained before it existed).

    Refused (``DataError``) when it does not describe ``schema``'s features."""
    path = Path(root) / bundle.ATTRIBUTION_FILE
    if not path.is_file():
        return None
    try:
        doc = json.loads(path.read_text())
        importance = {f["name"]: float(f["importance"]) for f in doc["features"]}
    except (ValueError, KeyError, TypeError) as e:
        raise DataError(f"{path} is not an attribution baseline: {e}") from e
    check_baseline(importance, schema, str(path))
    return doc


def check_baseline(importance: Mapping[str, float], schema: FeatureSchema, where: str = "the baseline") -> None:
    if sorted(importance) != sorted(schema.names):
        raise DataError(
            f"{where} has attributions for {sorted(importance)}, but the model's features are {sorted(schema.names)}"
        )
    if any(not math.isfinite(v) or v < 0 for v in importance.values()):
        raise DataError(f"{where} has attributions that are not finite non-negative numbers")


def ndcg(baseline: Mapping[str, float], live: Mapping[str, float]) -> float:
    """NDCG of the ``live`` ranking with the ``baseline`` attributions as relevance (SageMaker's definition)."""
    ideal = sorted(baseline, key=lambda f: (-baseline[f], f))
    ranked = sorted(live, key=lambda f: (-live[f], f))
    dcg = sum(baseline[f] / math.log2(i + 2) for i, f in enumerate(ranked))
    idcg = sum(baseline[f] / math.log2(i + 2) for i, f in enumerate(ideal))
    return 1.0 if idcg == 0 else dcg / idcg


def attribution_drift(
    booster: xgboost.Booster,
    schema: FeatureSchema,
    baseline: dict,
    window: np.ndarray,
    *,
    threshold: float = DEFAULT_THRESHOLD,
    min_rows: int = DEFAULT_MIN_ROWS,
    max_rows: int = DEFAULT_MAX_ROWS,
    seed: int = 0,
    top: int = 5,
) -> SignalResult:
    """NDCG of the window's attribution ranking against ``baseline`` (``load_attribution_baseline``)."""
    if not 0.0 < threshold < 1.0:
        raise ConfigError(f"attribution drift threshold {threshold!r} must be an NDCG in (0, 1)")
    if min_rows < 1 or max_rows < min_rows:
        raise ConfigError(f"attribution drift needs max_rows >= min_rows >= 1; got {min_rows} and {max_rows}")
    reference = {f["name"]: float(f["importance"]) for f in baseline["features"]}
    check_baseline(reference, schema)
    window = np.asarray(window, dtype=np.float32)
    if window.ndim != 2 or window.shape[1] != len(schema.features):
        raise DataError(f"the window matrix has shape {window.shape}: expected (rows, {len(schema.features)})")
    if len(window) < min_rows:
        return SignalResult(
            SIGNAL,
            "insufficient",
            threshold=threshold,
            rows=len(window),
            reason=f"the window has {len(window)} rows: attribution drift needs at least {min_rows}",
        )
    live_doc = feature_importance(booster, schema, window, max_rows=max_rows, seed=seed)
    live = {f["name"]: f["importance"] for f in live_doc["features"]}
    value = ndcg(reference, live)
    return SignalResult(
        SIGNAL,
        "alert" if value < threshold else "ok",
        value=value,
        threshold=threshold,
        rows=len(window),
        evidence={
            "sampled_rows": live_doc["n_rows"],
            "baseline_top": _top(reference, top),
            "window_top": _top(live, top),
            "changes": _changes(reference, live, top),
        },
    )


def _top(importance: Mapping[str, float], n: int) -> list[dict]:
    ranked = sorted(importance, key=lambda f: (-importance[f], f))[:n]
    return [{"name": f, "importance": importance[f]} for f in ranked]


def _changes(reference: Mapping[str, float], live: Mapping[str, float], n: int) -> list[dict]:
    """The features whose rank moved most, with their ranks (1 = most important) and attributions."""
    rank_ref = _ranks(reference)
    rank_live = _ranks(live)
    moved = sorted(reference, key=lambda f: (-abs(rank_ref[f] - rank_live[f]), rank_ref[f]))[:n]
    return [
        {
            "name": f,
            "baseline_rank": rank_ref[f],
            "window_rank": rank_live[f],
            "baseline": reference[f],
            "window": live[f],
        }
        for f in moved
        if rank_ref[f] != rank_live[f]
    ]


def _ranks(importance: Mapping[str, float]) -> dict[str, int]:
    ordered: Sequence[str] = sorted(importance, key=lambda f: (-importance[f], f))
    return {f: i + 1 for i, f in enumerate(ordered)}
