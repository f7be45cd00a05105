"""Training, prediction, model files and training parameters (kfloop.training.booster)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from kfloop.errors import ConfigError, DataError
from kfloop.schema import infer_schema
from kfloop.training.booster import (
    DensePredictor,
    TrainParams,
    iteration_range,
    load_model,
    predict,
    predicted_labels,
    save_model,
    train,
)

FAST = TrainParams(n_estimators=30, max_depth=3, learning_rate=0.3, early_stopping_rounds=5)


def make_frame(n: int, task: str, seed: int = 0) -> pd.DataFrame:
    """x1 informative, x2 noise, color a string categorical whose odd letters (a, c, e) raise the target."""
    rng = np.random.default_rng(seed)
    x1, x2 = rng.normal(size=n), rng.normal(size=n)
    color = rng.choice(list("abcdef"), size=n).astype(object)
    color[rng.random(n) < 0.02] = None
    signal = 2 * x1 + 1.5 * np.isin(color, ["a", "c", "e"]) + rng.normal(0, 0.5, n)
    x1[rng.random(n) < 0.02] = np.nan
    if task == "binary":
        target = np.where(signal > 0.75, "yes", "no")
    elif task == "multiclass":
        target = pd.qcut(signal, 3, labels=["high", "low", "mid"]).astype(str)
    else:
        target = signal
    return pd.DataFrame({"x1": x1, "x2": x2, "color": color, "target": target})


def fit(task: str, n: int = 2000, params: TrainParams = FAST):
    df = make_frame(n, task)
    schema = infer_schema(df, "target", task=task)
    cut = int(n * 0.8)
    return schema, df.iloc[cut:], train(schema, df.iloc[:cut], df.iloc[cut:], params)


def test_same_data_and_params_give_identical_model_bytes(tmp_path):
    _, _, first = fit("binary")
    _, _, second = fit("binary")
    assert bytes(first.save_raw("ubj")) == bytes(second.save_raw("ubj"))
    a, b = save_model(first, tmp_path / "a.ubj"), save_model(second, tmp_path / "b.ubj")
    assert a.read_bytes() == b.read_bytes()
    _, _, other_seed = fit("binary", params=TrainParams(**{**FAST.to_dict(), "seed": 1, "subsample": 0.7}))
    assert bytes(other_seed.save_raw("ubj")) != bytes(first.save_raw("ubj"))


def test_categorical_codes_are_split_natively():
    # a, c, e (codes 0, 2, 4) are positive: no single threshold on the codes separates them, but one
    # native categorical (partition) split does, so a single depth-1 tree must be exact
    rng = np.random.default_rng(3)
    color = rng.choice(list("abcdef"), size=1200)
    df = pd.DataFrame({"x": rng.normal(size=1200), "color": color, "target": np.isin(color, ["a", "c", "e"])})
    schema = infer_schema(df, "target", task="binary")
    params = TrainParams(n_estimators=1, max_depth=1, learning_rate=1.0, early_stopping_rounds=0)
    booster = train(schema, df, None, params)
    assert booster.feature_types == ["q", "c"]
    pred = predict(booster, schema, schema.encode_frame(df))
    labels = schema.encode_labels(df["target"])
    assert (predicted_labels(schema, pred) == labels).all()


@pytest.mark.parametrize("task", ["binary", "multiclass", "regression"])
def test_each_task_trains_and_predicts_with_the_right_shape(task):
    schema, valid, booster = fit(task)
    X = schema.encode_frame(valid)
    y = schema.encode_labels(valid["target"])
    pred = predict(booster, schema, X)
    if task == "regression":
        assert pred.shape == (len(valid),)
        assert np.corrcoef(pred, y)[0, 1] > 0.8
        return
    k = len(schema.classes)
    assert pred.shape == (len(valid), k) and k == (2 if task == "binary" else 3)
    np.testing.assert_allclose(pred.sum(axis=1), 1.0, rtol=1e-5)
    labels = predicted_labels(schema, pred)
    assert labels.shape == (len(valid),)
    assert (labels == y).mean() > 0.7  # chance is 0.5 / 0.33


def test_predict_on_no_rows_keeps_the_shape():
    schema, _, booster = fit("multiclass", n=600)
    assert predict(booster, schema, np.empty((0, 3), dtype=np.float32)).shape == (0, 3)


def test_early_stopping_stops_on_a_noisy_target():
    df = make_frame(2000, "binary")
    df["target"] = np.random.default_rng(9).choice(["no", "yes"], size=len(df))  # unrelated to features
    schema = infer_schema(df, "target", task="binary")
    params = TrainParams(n_estimators=200, learning_rate=0.3, early_stopping_rounds=5)
    booster = train(schema, df.iloc[:1600], df.iloc[1600:], params)
    best = int(booster.attr("best_iteration"))
    assert booster.num_boosted_rounds() == best + 1 < 200


def test_without_validation_data_all_rounds_are_trained():
    df = make_frame(500, "regression")
    schema = infer_schema(df, "target", task="regression")
    booster = train(schema, df, None, TrainParams(n_estimators=12, early_stopping_rounds=5))
    assert booster.num_boosted_rounds() == 12 and booster.attr("best_iteration") is None


def test_save_and_load_round_trip_in_ubjson(tmp_path):
    schema, valid, booster = fit("multiclass")
    path = save_model(booster, tmp_path / "model" / "model.ubj")
    raw = path.read_bytes()
    assert raw[:1] == b"{" and b"learner" in raw[:200]  # UBJSON object, not a pickle (b"\x80")
    loaded = load_model(path)
    X = schema.encode_frame(valid)
    np.testing.assert_array_equal(predict(loaded, schema, X), predict(booster, schema, X))
    assert loaded.feature_types == ["q", "q", "c"]
    assert loaded.attr("best_iteration") == booster.attr("best_iteration")


def test_model_files_must_be_ubjson_and_exist(tmp_path):
    _, _, booster = fit("binary", n=400)
    with pytest.raises(ConfigError, match="model.pkl"):
        save_model(booster, tmp_path / "model.pkl")
    with pytest.raises(DataError, match="does not exist"):
        load_model(tmp_path / "missing.ubj")
    (tmp_path / "junk.ubj").write_bytes(b"not a model")
    with pytest.raises(DataError, match="not an XGBoost model"):
        load_model(tmp_path / "junk.ubj")


def test_empty_training_data_is_an_error():
    df = make_frame(50, "binary")
    schema = infer_schema(df, "target", task="binary")
    with pytest.raises(DataError, match="training data has no rows"):
        train(schema, df.iloc[:0], df, FAST)


def test_params_from_mapping_round_trip():
    params = TrainParams.from_mapping({"n_estimators": 50, "learning_rate": 1, "subsample": 0.5})
    assert params.n_estimators == 50 and params.subsample == 0.5 and params.max_depth == 6
    assert TrainParams.from_mapping(params.to_dict()) == params
    assert TrainParams.from_mapping(None) == TrainParams()


@pytest.mark.parametrize(
    "bad",
    [
        {"n_estimators": 0},
        {"n_estimators": 2.5},
        {"max_depth": "6"},
        {"learning_rate": 0},
        {"learning_rate": float("nan")},
        {"subsample": 1.5},
        {"colsample_bytree": 0.0},
        {"reg_lambda": -1},
        {"min_child_weight": -0.1},
        {"early_stopping_rounds": -1},
        {"seed": True},
        {"nthread": -2},
        {"max_cat_to_onehot": 0},
    ],
)
def test_bad_params_name_the_parameter(bad):
    (name,) = bad
    with pytest.raises(ConfigError, match=name):
        TrainParams.from_mapping(bad)


def test_unknown_params_are_rejected():
    with pytest.raises(ConfigError, match="eta"):
        TrainParams.from_mapping({"eta": 0.1})


@pytest.mark.parametrize("task", ["binary", "multiclass", "regression"])
@pytest.mark.parametrize("rows", [1, 7, 400])
def test_dense_predictor_answers_as_inplace_predict(task, rows):
    """Serving's direct call gives inplace_predict's numbers, shape and dtype (categorical codes, missing
    values, early stopping's best iteration included)."""
    schema, valid, booster = fit(task, params=TrainParams(n_estimators=60, max_depth=3, early_stopping_rounds=3))
    X = schema.encode_frame(pd.concat([valid] * 2).iloc[:rows])
    X[0, 0] = np.nan
    dense = DensePredictor(booster)
    want = booster.inplace_predict(X, iteration_range=iteration_range(booster))
    got = dense(X)
    assert got.dtype == want.dtype and got.shape == want.shape
    np.testing.assert_array_equal(got, want)
    np.testing.assert_array_equal(predict(dense, schema, X), predict(booster, schema, X))
    first = dense(X[:1])
    kept = first.copy()
    dense(X[::-1].copy())
    np.testing.assert_array_equal(first, kept)  # an answer is not overwritten by the next call
    assert predict(dense, schema, np.empty((0, 3), dtype=np.float32)).shape[0] == 0
