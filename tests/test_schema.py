"""The feature schema and the one encoding shared by training and serving."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from kfloop.errors import ConfigError, DataQualityError
from kfloop.schema import FeatureSchema, infer_schema, infer_task


@pytest.fixture
def frame():
    return pd.DataFrame(
        {"x": [1.0, 2.0, np.nan, 4.0], "c": ["b", "a", None, "b"], "flag": [True, False, True, True], "y": [0, 1, 0, 1]}
    )


def test_infer_schema_kinds_categories_and_task(frame):
    schema = infer_schema(frame, "y")
    assert schema.names == ["x", "c", "flag"]
    assert [f.kind for f in schema.features] == ["numeric", "categorical", "categorical"]
    assert schema.feature("c").categories == ("a", "b")
    assert schema.feature("flag").categories == ("0", "1")
    assert (schema.task, schema.classes) == ("binary", ("0", "1"))
    assert schema.feature_types == ["q", "c", "c"]


def test_encoding_codes_categories_and_keeps_missing_as_nan(frame):
    schema = infer_schema(frame, "y")
    X = schema.encode_frame(frame)
    assert X.dtype == np.float32 and X.shape == (4, 3)
    np.testing.assert_array_equal(X[:, 1], np.array([1, 0, np.nan, 1], dtype=np.float32))
    assert np.isnan(X[2, 0])


def test_unseen_categories_become_missing(frame):
    schema = infer_schema(frame, "y")
    X = schema.encode_columns({"x": [1.0], "c": ["zzz"], "flag": [True]}, 1)
    assert np.isnan(X[0, 1]) and X[0, 2] == 1


def test_round_trip_through_dict(frame):
    schema = infer_schema(frame, "y")
    assert FeatureSchema.from_dict(schema.to_dict()) == schema


def test_strings_in_a_numeric_feature_are_named(frame):
    schema = infer_schema(frame, "y")
    with pytest.raises(DataQualityError, match="'x'"):
        schema.encode_columns({"x": ["abc"], "c": ["a"], "flag": [True]}, 1)


def test_missing_feature_column_is_named(frame):
    schema = infer_schema(frame, "y")
    with pytest.raises(DataQualityError, match="required_columns"):
        schema.encode_frame(frame.drop(columns=["c"]))


def test_labels_encode_to_class_indices_and_unknown_labels_fail(frame):
    schema = infer_schema(frame, "y")
    np.testing.assert_array_equal(schema.encode_labels([1, 0, 1.0]), [1, 0, 1])
    with pytest.raises(DataQualityError, match="known_labels"):
        schema.encode_labels([2])


@pytest.mark.parametrize(
    "values,expected",
    [
        ([0, 1, 1, 0], "binary"),
        (["a", "b", "c"], "multiclass"),
        (np.linspace(0, 1, 50), "regression"),
        (list(range(100)), "regression"),
        ([1.0, 2.0, 3.0, 1.0], "multiclass"),
    ],
)
def test_task_inference(values, expected):
    assert infer_task(pd.Series(values)) == expected


def test_task_parameter_is_checked(frame):
    assert infer_task(frame["y"], "regression") == "regression"
    with pytest.raises(ConfigError):
        infer_task(frame["y"], "ranking")


def test_missing_target_is_named(frame):
    with pytest.raises(DataQualityError, match="target_present"):
        infer_schema(frame, "nope")
