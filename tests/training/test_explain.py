"""Global feature importance from XGBoost's own SHAP values (kfloop.training.explain)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from kfloop.errors import DataError
from kfloop.schema import infer_schema
from kfloop.training.booster import TrainParams, train
from kfloop.training.explain import feature_importance, sample_rows

PARAMS = TrainParams(n_estimators=30, max_depth=3, learning_rate=0.3, early_stopping_rounds=0)


def make_frame(n: int, task: str, seed: int = 0) -> pd.DataFrame:
    """signal strongly informative, shade (string categorical) mildly informative, noise unrelated."""
    rng = np.random.default_rng(seed)
    signal, noise = rng.normal(size=n), rng.normal(size=n)
    shade = rng.choice(["dark", "light", "mid"], size=n)
    value = 2 * signal + 0.7 * (shade == "dark") + rng.normal(0, 0.3, n)
    target = value if task == "regression" else pd.qcut(value, 2 if task == "binary" else 3, labels=False)
    return pd.DataFrame({"noise": noise, "shade": shade, "signal": signal, "target": target})


@pytest.mark.parametrize("task", ["binary", "multiclass", "regression"])
def test_informative_features_rank_above_noise(task):
    df = make_frame(1500, task)
    schema = infer_schema(df, "target", task=task)
    booster = train(schema, df, None, PARAMS)
    result = feature_importance(booster, schema, schema.encode_frame(df), max_rows=500)
    names = [f["name"] for f in result["features"]]
    assert names == ["signal", "shade", "noise"]
    values = [f["importance"] for f in result["features"]]
    assert values[0] > 3 * values[2] and all(type(v) is float and v >= 0 for v in values)
    assert result["method"] == "mean_abs_shap" and result["n_rows"] == 500


def test_large_inputs_are_sampled_deterministically():
    df = make_frame(800, "binary")
    schema = infer_schema(df, "target", task="binary")
    booster = train(schema, df, None, PARAMS)
    X = schema.encode_frame(df)
    assert feature_importance(booster, schema, X, max_rows=100, seed=4) == feature_importance(
        booster, schema, X, max_rows=100, seed=4
    )
    assert feature_importance(booster, schema, X, max_rows=100, seed=4) != feature_importance(
        booster, schema, X, max_rows=100, seed=5
    )
    assert feature_importance(booster, schema, X[:50], max_rows=100)["n_rows"] == 50


def test_sample_rows_keeps_row_order_and_has_no_duplicates():
    X = np.arange(1000, dtype=np.float32).reshape(-1, 1)
    rows = sample_rows(X, 100, seed=1)
    assert rows.shape == (100, 1) and np.all(np.diff(rows[:, 0]) > 0)
    assert len(sample_rows(X[:10], 100)) == 10


def test_no_rows_is_an_error():
    df = make_frame(200, "regression")
    schema = infer_schema(df, "target", task="regression")
    booster = train(schema, df, None, PARAMS)
    with pytest.raises(DataError):
        feature_importance(booster, schema, np.empty((0, 3), dtype=np.float32))
