"""Answers (kfloop.inference.responses): encoded from predictions in either protocol, read back as
per-row predictions, and converted to the other protocol."""

from __future__ import annotations

import numpy as np
import orjson
import pytest

from kfloop.errors import InvalidRequest
from kfloop.inference.responses import (
    answer_in,
    answer_predictions,
    binary_answer,
    encode_predictions,
    encode_v2_output,
    output_predictions,
    predictions_output,
    requested_binary,
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


def test_a_v2_answer_has_the_protocols_fields_and_no_null_objects():
    doc = v2_answer("churn", "7", "r-1", encode_v2_output(BINARY, PROBABILITIES))
    assert doc == {
        "model_name": "churn",
        "model_version": "7",
        "id": "r-1",
        "outputs": [
            {
                "name": "predictions",
                "shape": [2, 2],
                "datatype": "FP32",
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


# -- requested outputs and binary answers -----------------------------------------------------------


@pytest.mark.parametrize(
    "body, binary",
    [
        ({"inputs": []}, False),
        ({"inputs": [], "parameters": {"content_type": "np"}}, False),
        ({"inputs": [], "parameters": {"binary_data_output": True}}, True),
        ({"inputs": [], "outputs": [{"name": "predictions"}]}, False),
        ({"inputs": [], "outputs": [{"name": "predictions", "parameters": {"binary_data": True}}]}, True),
        ({"inputs": [], "outputs": [{"name": "predictions", "parameters": {"binary_data": False}}]}, False),
        (  # a requested output's own flag wins over the request's
            {
                "parameters": {"binary_data_output": True},
                "outputs": [{"name": "predictions", "parameters": {"binary_data": False}}],
            },
            False,
        ),
        ({"parameters": {"binary_data_output": True}, "outputs": [{"name": "predictions"}]}, True),
    ],
)
def test_requested_binary_follows_the_binary_tensor_extension(body, binary):
    assert requested_binary(body) is binary


@pytest.mark.parametrize(
    "body, message",
    [
        ({"outputs": [{"name": "probabilities"}]}, "outputs[0]: unknown output 'probabilities'"),
        ({"outputs": [{"name": "predictions"}, {"name": "x"}]}, "outputs[1]: unknown output 'x'"),
        ({"outputs": {"name": "predictions"}}, '"outputs" must be a list'),
        ({"outputs": [{"parameters": {}}]}, "outputs[0] must be an object with a string name"),
        ({"outputs": ["predictions"]}, "outputs[0] must be an object with a string name"),
        ({"parameters": {"binary_data_output": "yes"}}, "parameters.binary_data_output must be true or false"),
        ({"parameters": [1]}, '"parameters" must be an object'),
        (
            {"outputs": [{"name": "predictions", "parameters": {"binary_data": 1}}]},
            "outputs[0].parameters.binary_data must be true or false",
        ),
    ],
)
def test_requested_outputs_that_the_model_does_not_have_are_refused(body, message):
    with pytest.raises(InvalidRequest) as error:
        requested_binary(body)
    assert message in str(error.value)


def test_a_binary_answer_is_the_json_header_then_the_raw_little_endian_outputs():
    answer = v2_answer("churn", "3", "req-1", encode_v2_output(BINARY, PROBABILITIES))
    content, json_length = binary_answer(answer)
    header = orjson.loads(content[:json_length])
    assert header["id"] == "req-1" and header["model_version"] == "3"
    (output,) = header["outputs"]
    assert "data" not in output
    assert output["parameters"] == {"binary_data_size": PROBABILITIES.nbytes}
    assert output["shape"] == [2, 2] and output["datatype"] == "FP32"
    data = np.frombuffer(content[json_length:], dtype="<f4").reshape(output["shape"])
    np.testing.assert_array_equal(data, PROBABILITIES)


def test_v2_answers_carry_no_null_fields():
    answer = v2_answer("churn", None, "req-1", encode_v2_output(BINARY, PROBABILITIES))
    assert None not in answer.values() and "model_version" not in answer
    assert None not in answer["outputs"][0].values()
