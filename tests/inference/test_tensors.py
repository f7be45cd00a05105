"""V2 tensors (kfloop.inference.tensors): their values as plain JSON values, and the model's V2 metadata."""

from __future__ import annotations

import numpy as np
import pytest

from kfloop.inference.tensors import plain_values, v2_input_metadata, v2_output_metadata
from kfloop.schema import Feature, FeatureSchema

SCHEMA = FeatureSchema(
    "churned",
    "binary",
    (Feature("age", "numeric"), Feature("income", "numeric"), Feature("plan", "categorical", ("basic", "pro"))),
    ("0", "1"),
)


@pytest.mark.parametrize(
    "data, expected",
    [
        ([1, None, 2.5], [1, None, 2.5]),
        ([[1, 2], [3, 4]], [1, 2, 3, 4]),
        (np.array([[1, 2], [3, 4]], np.float32), [1.0, 2.0, 3.0, 4.0]),
        ([b"pro", None, "basic", b"caf\xc3\xa9"], ["pro", None, "basic", "café"]),
        ([], []),
    ],
    ids=["flat", "nested", "ndarray", "bytes", "empty"],
)
def test_plain_values(data, expected):
    values = plain_values(data)
    assert values == expected and type(values) is list
    assert all(type(v) is not np.float32 for v in values)


def test_v2_metadata():
    assert v2_input_metadata(SCHEMA) == [
        {"name": "age", "datatype": "FP32", "shape": [-1]},
        {"name": "income", "datatype": "FP32", "shape": [-1]},
        {"name": "plan", "datatype": "BYTES", "shape": [-1]},
    ]
    assert v2_output_metadata(SCHEMA) == [{"name": "predictions", "datatype": "FP32", "shape": [-1, 2]}]
    regression = FeatureSchema("y", "regression", SCHEMA.features)
    assert v2_output_metadata(regression)[0]["shape"] == [-1]
