"""Answers (kfloop.inference.responses): encoded from predictions in either protocol, read back as
per-row predictions, and converted to the other protocol."""

from __future__ import annotations

import numpy as np
import orjson
import pytest

from kfloop.inference.responses import (
    answer_in,
    answer_predictions,
    encode_predictions,
    encode_v2_output,
    output_predictions,
    predictions_output,
    v1_answer,
    v2_answer,
)
from kfloop.inference.tensors import Tensor
from kfloop.schema import Feature, FeatureSchema

FEATURES = (Feature("age", "numeric"), Feature("plan", "categorical", ("basic", "pro")))
BINARY = FeatureSchema("churned", "binary", FEATURES, ("0", "1"))
REGRESSION = FeatureSchema("y", "regression", FEATURES)
PROBABILITIES = np.array([[0.25, 0.75], [0.5, 0.5]], np.float32)


def test_responses_by_task():
    assert encode_predictions(BINARY, PROBABILITIES) == [[0.25, 0.75], [0.5, 0.5]]
    assert encode_predictions(REGRESSION, np.array([1.5, 2.0], np.float32)) == [1.5, 2.0]
    with pytest.raises(ValueError, match="2-D"):
        encode_predictions(BINARY, np.array([0.1, 0.2]))
    out = encode_v2_output(BINARY, PROBABILITIES.astype(np.float64))
    assert (out.name, out.shape, out.datatype, out.data.dtype) == ("predictions", [2, 2], "FP32", np.float32)
    with pytest.raises(ValueError, match="1-D"):
        encode_v2_output(REGRESSION, PROBABILITIES)


def test_a_v2_answer_has_every_field_kserve_writes():
    doc = v2_answer("churn", "7", "r-1", encode_v2_output(BINARY, PROBABILITIES))
    assert doc == {
        "model_name": "churn",
        "model_version": "7",
        "id": "r-1",
        "parameters": None,
        "outputs": [
            {
                "name": "predictions",
                "shape": [2, 2],
                "datatype": "FP32",
                "parameters": None,
                "data": [0.25, 0.75, 0.5, 0.5],
            }
        ],
    }
    orjson.dumps(doc)  # plain JSON values only


def test_v1_predictions_as_a_v2_output():
    out = predictions_output([[0.25, 0.75], [0.5, 0.5]])
    assert (out.name, out.shape, out.datatype) == ("predictions", [2, 2], "FP32")
    np.testing.assert_array_equal(out.data, PROBABILITIES)
    assert predictions_output([1.5, 2.0, 3.0]).shape == [3]


@pytest.mark.parametrize(
    "output, expected",
    [
        ({"name": "predictions", "shape": [2, 2], "data": [0.25, 0.75, 0.5, 0.5]}, [[0.25, 0.75], [0.5, 0.5]]),
        ({"name": "predictions", "shape": [2, 2], "data": [[0.25, 0.75], [0.5, 0.5]]}, [[0.25, 0.75], [0.5, 0.5]]),
        ({"name": "predictions", "shape": [3], "data": [1.5, 2.0, 3.0]}, [1.5, 2.0, 3.0]),
        ({"name": "scores", "shape": [2, 1], "data": [1.0, 2.0]}, [[1.0], [2.0]]),
    ],
    ids=["flat", "nested", "regression", "first-output"],
)
def test_per_row_predictions_of_v2_outputs(output, expected):
    assert output_predictions([output]) == expected
    assert answer_predictions({"outputs": [output]}) == expected


def test_the_predictions_output_is_read_whatever_its_position():
    other = {"name": "leaf", "shape": [2], "data": [9, 9]}
    ours = {"name": "predictions", "shape": [2], "data": [0.5, 0.25]}
    assert output_predictions([other, ours]) == [0.5, 0.25]


def test_answers_convert_between_protocols_and_back():
    v1 = v1_answer(encode_predictions(BINARY, PROBABILITIES))
    assert answer_predictions(v1) == [[0.25, 0.75], [0.5, 0.5]]
    v2 = answer_in("v2", v1, "churn", "3", "r-9")
    assert v2 == v2_answer("churn", "3", "r-9", encode_v2_output(BINARY, PROBABILITIES))
    assert answer_in("v1", v2, "churn", "3", "r-9") == v1


def test_a_v2_answer_takes_the_output_it_is_given():
    out = Tensor("predictions", [2], "FP32", np.array([1.5, 2.5], np.float32))
    assert v2_answer("m", None, "r", out)["outputs"][0]["data"] == [1.5, 2.5]
