"""Train/valid/test split: determinism, stratification, completeness and argument checks."""

from __future__ import annotations

import time

import numpy as np
import pandas as pd
import pytest

from kfloop.errors import ConfigError, DataError
from kfloop.training.samples import churn
from kfloop.training.split import split


@pytest.fixture(scope="module")
def data() -> pd.DataFrame:
    return churn(4000, seed=4).reset_index().rename(columns={"index": "row"})


def test_same_seed_same_parts_other_seed_other_parts(data):
    a = split(data, "churn", "binary", seed=1)
    b = split(data, "churn", "binary", seed=1)
    c = split(data, "churn", "binary", seed=2)
    for x, y in zip(a, b):
        pd.testing.assert_frame_equal(x, y)
    assert set(a[2]["row"]) != set(c[2]["row"])


def test_parts_are_disjoint_complete_and_sized(data):
    train, valid, test = split(data, "churn", "binary", valid_fraction=0.2, test_fraction=0.1)
    rows = [set(p["row"]) for p in (train, valid, test)]
    assert not rows[0] & rows[1] and not rows[0] & rows[2] and not rows[1] & rows[2]
    assert rows[0] | rows[1] | rows[2] == set(data["row"])
    assert (len(train), len(valid), len(test)) == (2800, 800, 400)
    for part in (train, valid, test):
        assert list(part.index) == list(range(len(part)))
        assert part["row"].is_monotonic_increasing  # original order kept


def test_binary_split_is_stratified(data):
    rate = data["churn"].mean()
    for part in split(data, "churn", "binary", seed=3):
        assert part["churn"].mean() == pytest.approx(rate, abs=0.002)


def test_multiclass_split_is_stratified():
    rng = np.random.default_rng(0)
    df = pd.DataFrame({"x": rng.normal(size=3000), "y": rng.choice(["a", "b", "c"], size=3000, p=[0.7, 0.2, 0.1])})
    shares = df["y"].value_counts(normalize=True)
    for part in split(df, "y", "multiclass", seed=5):
        pd.testing.assert_series_equal(
            part["y"].value_counts(normalize=True).reindex(shares.index), shares, atol=0.003, check_names=False
        )


def test_regression_split(data):
    train, valid, test = split(data, "monthly_charges", "regression", seed=0)
    assert (len(train), len(valid), len(test)) == (2800, 600, 600)
    assert set(train["row"]) | set(valid["row"]) | set(test["row"]) == set(data["row"])


def test_tiny_data_still_gives_three_non_empty_parts():
    df = pd.DataFrame({"x": range(6), "y": [0, 1, 0, 1, 0, 1]})
    parts = split(df, "y", "binary")
    assert [len(p) for p in parts] == [2, 2, 2]
    assert all(set(p["y"]) == {0, 1} for p in parts)


def test_too_few_rows():
    with pytest.raises(DataError, match="2 rows"):
        split(pd.DataFrame({"x": [1, 2], "y": [1.0, 2.0]}), "y", "regression")


def test_binary_class_too_rare_to_stratify():
    df = pd.DataFrame({"x": range(50), "y": [1, 1] + [0] * 48})
    with pytest.raises(DataError, match="stratify"):
        split(df, "y", "binary")


def test_rare_multiclass_class_goes_to_train(caplog):
    df = pd.DataFrame({"x": range(61), "y": ["a"] * 30 + ["b"] * 30 + ["rare"]})
    train, valid, test = split(df, "y", "multiclass")
    assert "rare" in set(train["y"]) and "rare" not in set(valid["y"]) | set(test["y"])
    assert "rare" in caplog.text


def test_missing_target_values_are_an_error():
    df = pd.DataFrame({"x": range(30), "y": [0, 1, None] * 10})
    with pytest.raises(DataError, match="target"):
        split(df, "y", "binary")


@pytest.mark.parametrize(
    "kwargs, word",
    [
        ({"valid_fraction": 0.0}, "valid_fraction"),
        ({"test_fraction": 1.0}, "test_fraction"),
        ({"valid_fraction": -0.1}, "valid_fraction"),
        ({"valid_fraction": 0.5, "test_fraction": 0.5}, "leaves no"),
        ({"task": "ranking"}, "ranking"),
    ],
)
def test_bad_arguments(data, kwargs, word):
    args = {"task": "binary", **kwargs}
    with pytest.raises(ConfigError, match=word):
        split(data, "churn", **args)


def test_unknown_target(data):
    with pytest.raises(DataError, match="label"):
        split(data, "label", "binary")


def test_a_million_rows_are_fast():
    df = churn(1_000_000, seed=0)
    start = time.perf_counter()
    train, valid, test = split(df, "churn", "binary")
    assert len(train) + len(valid) + len(test) == 1_000_000
    assert time.perf_counter() - start < 5.0
