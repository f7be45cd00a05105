"""Requests (kfloop.inference.requests): decoded into the same matrix as training's encoding, with errors
that name the field; read back as rows by feature name; rebuilt in the other protocol."""

from __future__ import annotations

import re

import numpy as np
import orjson
import pandas as pd
import pytest

from kfloop.errors import InvalidRequest
from kfloop.inference.requests import (
    RequestDecoder,
    numbers_only,
    request_in,
    v1_request,
    v1_rows,
    v2_request,
    v2_rows,
)
from kfloop.inference.tensors import Tensor
from kfloop.schema import Feature, FeatureSchema, infer_schema
from kfloop.training.samples import churn

FRAME = pd.DataFrame(
    {
        "age": [31, 45, 22, 60, 38],
        "income": [52.5, None, 31.0, 88.25, 40.0],
        "plan": ["pro", "basic", None, "team", "pro"],
        "churned": [0, 1, 0, 1, 1],
    }
)
SCHEMA = infer_schema(FRAME, "churned")
NUMERIC = infer_schema(FRAME.drop(columns=["plan"]), "churned")


def rows_of(df: pd.DataFrame) -> list[list]:
    return [[None if pd.isna(v) else v for v in row] for row in df[SCHEMA.names].itertuples(index=False)]


def assert_same(a: np.ndarray, b: np.ndarray) -> None:
    np.testing.assert_array_equal(a, b)  # NaN equals NaN here
    assert a.dtype == np.float32


# -- V1 ------------------------------------------------------------------------------------------


def test_v1_lists_decode_to_the_training_matrix():
    decoded = RequestDecoder(SCHEMA).decode_v1({"instances": rows_of(FRAME)})
    assert_same(decoded.X, SCHEMA.encode_frame(FRAME))
    assert decoded.n_rows == 5 and decoded.unseen == {}


def test_v1_objects_decode_like_lists():
    objects = [dict(zip(SCHEMA.names, row)) for row in rows_of(FRAME)]
    assert_same(RequestDecoder(SCHEMA).decode_v1({"instances": objects}).X, SCHEMA.encode_frame(FRAME))


def test_all_numeric_fast_path_matches_training_and_takes_numeric_strings():
    decoder = RequestDecoder(NUMERIC)
    assert_same(decoder.decode_v1({"instances": [[31, 52.5], [45, None]]}).X, NUMERIC.encode_frame(FRAME.head(2)))
    assert_same(decoder.decode_v1({"instances": [["31", "52.5"]]}).X, np.array([[31, 52.5]], np.float32))


def test_unseen_categories_are_missing_and_counted_but_missing_ones_are_not():
    decoded = RequestDecoder(SCHEMA).decode_v1(
        {"instances": [[1, 2, "gold"], [1, 2, "gold"], [1, 2, None], [1, 2, "pro"]]}
    )
    assert np.isnan(decoded.X[:3, 2]).all() and decoded.X[3, 2] == SCHEMA.feature("plan").categories.index("pro")
    assert decoded.unseen == {"plan": 2}


# The decoder is the schema's encoding reimplemented for speed: these hold the two equal.
EDGE_VALUES = [
    ("numeric strings", {"age": ["31", " 45 ", "1e1"]}),
    ("ints", {"age": [1, 0, 7], "income": [1, 0, -3]}),
    ("missing", {"income": [None, float("nan"), None], "plan": [None, float("nan"), None]}),
    ("unseen categories", {"plan": ["gold", "pro", "Pro"]}),
    ("categories as numbers", {"plan": [1, 2.0, True]}),
]


@pytest.mark.parametrize("columns", [c for _, c in EDGE_VALUES], ids=[i for i, _ in EDGE_VALUES])
def test_the_decoder_encodes_edge_values_as_the_schema_does(columns):
    values = {"age": [30, 40, 50], "income": [1.5, 2.5, 3.5], "plan": ["pro", "basic", "team"], **columns}
    rows = [list(row) for row in zip(*(values[name] for name in SCHEMA.names))]
    assert_same(RequestDecoder(SCHEMA).decode_v1({"instances": rows}).X, SCHEMA.encode_columns(values, 3))


def test_the_decoder_encodes_the_churn_sample_as_training_does():
    df = churn(500, seed=3)
    schema = infer_schema(df, "churn")
    rows = [[None if pd.isna(v) else v for v in row] for row in df[schema.names].itertuples(index=False)]
    assert_same(RequestDecoder(schema).decode_v1({"instances": rows}).X, schema.encode_frame(df))


def test_categorical_numbers_use_the_schemas_label_keys():
    schema = FeatureSchema("y", "binary", (Feature("size", "categorical", ("1", "2")),), ("0", "1"))
    X = RequestDecoder(schema).decode_v1({"instances": [[1], [2.0], ["2"], [True]]}).X
    assert X[:, 0].tolist() == [0.0, 1.0, 1.0, 0.0]


BAD_V1 = [
    ([[1, 2, "pro"]], "JSON object"),
    ({"rows": []}, '"instances"'),
    ({"instances": {"age": 1}}, '"instances" must be a list'),
    ({"instances": []}, "empty"),
    ({"instances": [[1, 2, "pro"]] * 4}, "4 rows, over the limit of 3"),
    ({"instances": [[1, 2, "pro"], [1, 2]]}, "instance 1 has 2 values; expected 3 features"),
    ({"instances": [7]}, "instance 0: expected a list of 3 values"),
    ({"instances": [[1, 2, "pro"], {"age": 1}]}, "instance 1: expected a list"),
    ({"instances": [{"age": 1, "income": 2, "plan": "pro"}, [1, 2, "pro"]]}, "instance 1: expected an object"),
    ({"instances": [{"age": 1, "income": 2, "plan": "pro", "zip": 1}]}, "unknown feature names ['zip']"),
    ({"instances": [{"age": 1, "plan": "pro"}]}, "missing features ['income']"),
    (
        {"instances": [[1, 2, "pro"], [1, "rich", "pro"]]},
        "feature 'income' at row 1: expected a number or null; got 'rich'",
    ),
    ({"instances": [[1, [2], "pro"]]}, "feature 'income' at row 0"),
    ({"instances": [[10**400, 2, "pro"]]}, "feature 'age' at row 0"),
    ({"instances": [[1, 2, ["pro"]]]}, "feature 'plan' at row 0: expected a category string"),
]


@pytest.mark.parametrize("body, message", BAD_V1, ids=[m for _, m in BAD_V1])
def test_bad_v1_requests_name_the_field(body, message):
    with pytest.raises(InvalidRequest) as error:
        RequestDecoder(SCHEMA, max_batch=3).decode_v1(body)
    assert message in str(error.value)


def test_numeric_strings_that_are_not_numbers_fail_on_the_fast_path_too():
    with pytest.raises(InvalidRequest, match="feature 'income' at row 0: .* got 'n/a'"):
        RequestDecoder(NUMERIC).decode_v1({"instances": [[1, "n/a"]]})


RAW_BODIES = [  # (JSON text, only numbers and nulls in "instances")
    (b'{"instances": [[31, 52.5], [45, null]]}', True),
    (b'{"instances":[[1e3,-2.5E-3],[+0,0]]}'.replace(b"+0", b"0"), True),
    (b'{\n "instances" : [ [ 1 , 2 ] ]\n}', True),
    (b'{"instances": [["31", "52.5"]]}', False),  # numeric strings: numbers, but checked value by value
    (b'{"instances": [[1, true]]}', False),
    (b'{"instances": [[false, 1]]}', False),
    (b'{"instances": [[1, 2]], "parameters": {}}', False),
    (b'{"instances": [[1, {}]]}', False),
    (b'{"instances": [[1, [2]]]}', True),  # lists only: the shape check refuses it
    (b'{"\u0069nstances": [[1, 2]]}', False),
    (b'{"instances": [[1, 1e300]]}', True),  # a large number: checked exactly
    (b'{"instances": [[1, 18446744073709551615]]}', True),
]


@pytest.mark.parametrize("raw, plain", RAW_BODIES, ids=[r.decode() for r, _ in RAW_BODIES])
def test_the_json_text_spares_the_value_check_only_for_numbers_and_nulls(raw, plain):
    assert numbers_only(raw) is plain
    decoder, body = RequestDecoder(NUMERIC), orjson.loads(raw)
    try:
        expected = decoder.decode_v1(body)
    except InvalidRequest as e:  # refused alike, naming the same field
        with pytest.raises(InvalidRequest, match=re.escape(str(e))):
            decoder.decode_v1(body, raw)
    else:
        assert_same(decoder.decode_v1(body, raw).X, expected.X)


EXACT_ROWS = [  # (instances, whether float64 holds them as received)
    ([[0.1, 52.5], [45, None]], True),
    ([[2**53 - 1, -(2**53 - 1)]], True),
    ([[2**53, 1.0]], False),  # float64 holds 2**53, but not every integer beyond it
    ([["0.1", 2.5]], False),  # a numeric string: a number for the model, a string as received
]


@pytest.mark.parametrize("instances, exact", EXACT_ROWS, ids=[str(r) for r, _ in EXACT_ROWS])
def test_rows_of_numbers_also_decode_to_float64_as_received(instances, exact):
    raw = orjson.dumps({"instances": instances})
    for decoded in (
        RequestDecoder(NUMERIC).decode_v1(orjson.loads(raw), raw),
        RequestDecoder(NUMERIC).decode_v1(orjson.loads(raw)),
    ):
        assert decoded.X.dtype == np.float32
        if not exact:
            assert decoded.exact is None
            continue
        assert decoded.exact.dtype == np.float64
        assert [[None if np.isnan(v) else v for v in row] for row in decoded.exact.tolist()] == instances
        assert_same(decoded.exact.astype(np.float32), decoded.X)


# -- V2 ------------------------------------------------------------------------------------------


def named_inputs(df: pd.DataFrame) -> list[Tensor]:
    n = len(df)
    return [
        Tensor("age", [n], "INT64", df.age.tolist()),
        Tensor("income", [n, 1], "FP64", [[None if pd.isna(v) else v] for v in df.income]),
        Tensor("plan", [n], "BYTES", [None if v is None else v.encode() for v in df.plan]),
    ]


def test_v2_named_inputs_decode_to_the_training_matrix():
    decoded = RequestDecoder(SCHEMA).decode_v2_inputs(named_inputs(FRAME))
    assert_same(decoded.X, SCHEMA.encode_frame(FRAME))


def test_v2_inputs_in_any_order_and_as_plain_tuples():
    inputs = [tuple(t) for t in reversed(named_inputs(FRAME))]
    assert_same(RequestDecoder(SCHEMA).decode_v2_inputs(inputs).X, SCHEMA.encode_frame(FRAME))


@pytest.mark.parametrize(
    "data",
    [[31, 52.5, 45, None], [[31, 52.5], [45, None]], np.array([[31, 52.5], [45, np.nan]], np.float32)],
    ids=["flat", "nested", "ndarray"],
)
def test_v2_single_tensor_on_an_all_numeric_model(data):
    X = RequestDecoder(NUMERIC).decode_v2_inputs([Tensor("input-0", [2, 2], "FP32", data)]).X
    assert_same(X, NUMERIC.encode_frame(FRAME.head(2)))


def _replace(inputs: list[Tensor], feature: str, **changes) -> list[Tensor]:
    return [t._replace(**changes) if t.name == feature else t for t in inputs]


GOOD = named_inputs(FRAME.head(2))
BAD_V2 = [
    ([], "no inputs"),
    ([Tensor("input-0", [2, 3], "FP32", [1, 2, 0, 1, 2, 0])], "categorical features ['plan']"),
    (_replace(GOOD, "plan", datatype="FP32"), "input 'plan' has datatype FP32; expected BYTES"),
    (_replace(GOOD, "age", datatype="BYTES"), "input 'age' has datatype BYTES; expected a numeric datatype"),
    (_replace(GOOD, "plan", shape=[3], data=["pro"] * 3), "input 'plan' has shape [3]"),
    (_replace(GOOD, "age", data=[1]), "input 'age' has 1 values; shape [2] needs 2"),
    (
        _replace(GOOD, "age", data=["old", 3]),
        "feature 'age' at row 0: expected a number or null for datatype INT64, not a string",
    ),
    (_replace(GOOD, "age", name="years"), "unknown feature names ['years']; missing features ['age']"),
    (GOOD[:2], "missing features ['plan']"),
    (GOOD + [GOOD[0]], "repeat a name"),
    (_replace(GOOD, "age", data="31"), "data must be a list"),
]


@pytest.mark.parametrize("inputs, message", BAD_V2, ids=[m for _, m in BAD_V2])
def test_bad_v2_inputs_name_the_field(inputs, message):
    with pytest.raises(InvalidRequest) as error:
        RequestDecoder(SCHEMA).decode_v2_inputs(inputs)
    assert message in str(error.value)


@pytest.mark.parametrize(
    "tensor, message",
    [
        (Tensor("x", [2, 3], "FP32", [1] * 6), "shape [2, 3]; expected [n, 2]"),
        (Tensor("x", [2, 2], "FP32", [1] * 3), "has 3 values; shape [2, 2] needs 4"),
        (Tensor("x", [2, 2], "BYTES", ["1"] * 4), "datatype BYTES"),
        (Tensor("x", [5, 2], "FP32", [1] * 10), "5 rows, over the limit of 4"),
    ],
)
def test_bad_v2_single_tensors(tensor, message):
    with pytest.raises(InvalidRequest) as error:
        RequestDecoder(NUMERIC, max_batch=4).decode_v2_inputs([tensor])
    assert message in str(error.value)


def test_a_v2_json_body_decodes_as_its_inputs():
    body = {"id": "r-1", "parameters": {}, "inputs": [t._asdict() for t in named_inputs(FRAME)]}
    assert_same(RequestDecoder(SCHEMA).decode_v2(body).X, SCHEMA.encode_frame(FRAME))


BAD_V2_BODIES = [
    ([1], 'a JSON object with an "inputs" list; got a list'),
    ({"input": []}, 'an "inputs" list; got an object without it'),
    ({"inputs": {"age": [1]}}, '"inputs" must be a list; got an object'),
    ({"id": 7, "inputs": []}, '"id" must be a string; got int'),
    ({"inputs": ["age"]}, "inputs[0] must be an object with name, shape, datatype and data; got a string"),
    ({"inputs": [{"name": "age", "data": [1]}]}, "inputs[0] has no shape, datatype"),
    ({"inputs": [{"name": 3, "shape": [1], "datatype": "FP32", "data": [1]}]}, "inputs[0].name must be a string"),
    (
        {"inputs": [{"name": "age", "shape": [1], "datatype": None, "data": [1]}]},
        "inputs[0].datatype must be a string; got null",
    ),
    (
        {"inputs": [{"name": "age", "shape": "1", "datatype": "FP32", "data": [1]}]},
        "input 'age': shape must be a list of integers; got '1'",
    ),
    (
        {"inputs": [{"name": "age", "shape": [1.5], "datatype": "FP32", "data": [1]}]},
        "shape must be a list of integers",
    ),
]


@pytest.mark.parametrize("body, message", BAD_V2_BODIES, ids=[m for _, m in BAD_V2_BODIES])
def test_v2_json_bodies_that_do_not_fit_the_protocol_name_the_field(body, message):
    with pytest.raises(InvalidRequest) as error:
        RequestDecoder(SCHEMA).decode_v2(body)
    assert message in str(error.value)


# -- rows by feature name ------------------------------------------------------------------------------


def test_v1_rows_by_feature_name_from_lists_and_objects():
    lists = {"instances": [[31, None, "pro"], [45, 2.5, "gold"]]}
    expected = [{"age": 31, "income": None, "plan": "pro"}, {"age": 45, "income": 2.5, "plan": "gold"}]
    assert v1_rows(lists, SCHEMA.names) == expected
    assert v1_rows({"instances": expected}, SCHEMA.names) == expected


def test_v2_rows_by_feature_name_from_inputs_per_feature():
    rows = v2_rows(list(reversed(named_inputs(FRAME.head(2)))), SCHEMA.names)
    assert rows == [{"age": 31, "income": 52.5, "plan": "pro"}, {"age": 45, "income": None, "plan": "basic"}]


@pytest.mark.parametrize(
    "data",
    [[31, 52.5, 45, None], [[31, 52.5], [45, None]], np.array([[31, 52.5], [45, 7]], np.float32)],
    ids=["flat", "nested", "ndarray"],
)
def test_v2_rows_by_feature_name_from_one_matrix(data):
    rows = v2_rows([Tensor("input-0", [2, 2], "FP32", data)], NUMERIC.names)
    assert [list(r) for r in rows] == [["age", "income"]] * 2
    assert rows[0] == {"age": 31, "income": 52.5} and rows[1]["age"] == 45
    assert all(type(v) in (int, float, type(None)) for r in rows for v in r.values())  # JSON values


# -- requests in the other protocol ------------------------------------------------------------------


def test_a_v1_request_rebuilt_from_the_matrix_decodes_to_it():
    decoded = RequestDecoder(SCHEMA).decode_v1({"instances": [[31, None, "pro"], [45.5, 2.5, "gold"]]})
    body = request_in("v1", decoded, SCHEMA, "r-1")
    assert body == v1_request(decoded, SCHEMA) == {"instances": [[31.0, None, "pro"], [45.5, 2.5, None]]}
    assert_same(RequestDecoder(SCHEMA).decode_v1(body).X, decoded.X)


def test_a_v2_request_rebuilt_from_the_matrix_decodes_to_it():
    decoded = RequestDecoder(SCHEMA).decode_v1({"instances": rows_of(FRAME)})
    body = request_in("v2", decoded, SCHEMA, "r-2")
    assert body == v2_request(decoded, SCHEMA, "r-2")
    assert body["id"] == "r-2"
    assert [(i["name"], i["shape"], i["datatype"]) for i in body["inputs"]] == [
        ("age", [5], "FP64"),
        ("income", [5], "FP64"),
        ("plan", [5], "BYTES"),
    ]
    assert body["inputs"][2]["data"] == ["pro", "basic", None, "team", "pro"]
    assert_same(RequestDecoder(SCHEMA).decode_v2(body).X, SCHEMA.encode_frame(FRAME))


# -- the value rule: one for every path ------------------------------------------------------------

BAD_V1_VALUES = [
    (True, "expected a number or null, not a boolean; got True"),
    ("NaN", "expected a finite number or null; got 'NaN'"),
    ("Infinity", "expected a finite number or null; got 'Infinity'"),
    ("-inf", "expected a finite number or null; got '-inf'"),
    (1e39, "out of range: a number's magnitude must stay below 2**64 (1.8e19); got 1e+39"),
    (float("inf"), "expected a finite number or null; got inf"),
    (2**64, "out of range: a number's magnitude must stay below 2**64 (1.8e19); got 18446744073709551616"),
    (2.0**64, "out of range"),
    (10**400, "out of range"),
]


@pytest.mark.parametrize("value, message", BAD_V1_VALUES, ids=[repr(v)[:20] for v, _ in BAD_V1_VALUES])
@pytest.mark.parametrize("schema", [SCHEMA, NUMERIC], ids=["columns", "all-numeric matrix"])
def test_a_numeric_value_that_is_not_a_finite_float32_is_refused_naming_the_field(schema, value, message):
    rows = [[31, 52.5, "pro"][: len(schema.names)] for _ in range(3)]
    rows[2][1] = value
    with pytest.raises(InvalidRequest) as error:
        RequestDecoder(schema).decode_v1({"instances": rows})
    assert str(error.value).startswith(f"feature 'income' at row 2: {message}")
    objects = [dict(zip(schema.names, row)) for row in rows]
    with pytest.raises(InvalidRequest, match="feature 'income' at row 2"):
        RequestDecoder(schema).decode_v1({"instances": objects})


def test_values_at_the_edges_of_the_rule_are_accepted():
    X = RequestDecoder(NUMERIC).decode_v1({"instances": [[2**64 - 1, 2.0**63], [-(2**64) + 1, -1e19], ["1e3", None]]}).X
    assert np.isfinite(X[:, 1][:2]).all() and X[2].tolist()[0] == 1000.0 and np.isnan(X[2, 1])


BAD_V2_VALUES = [
    ("INT64", 42.7, "not an integer, as datatype INT64 needs; got 42.7"),
    ("UINT8", -5, "out of the range of datatype UINT8 (0 to 255); got -5"),
    ("UINT8", 256, "out of the range of datatype UINT8 (0 to 255); got 256"),
    ("INT8", -129, "out of the range of datatype INT8"),
    ("FP16", 1e6, "out of the range of datatype FP16 (-65504 to 65504); got 1000000.0"),
    ("FP32", 1e39, "out of range: a number's magnitude"),
    ("FP64", -1e300, "out of range: a number's magnitude"),
    ("INT64", True, "expected a number or null, not a boolean"),
    ("FP32", "1.5", "expected a number or null for datatype FP32, not a string"),
    ("INT64", 2**64, "out of range: a number's magnitude"),
    ("INT64", 2**63, "out of the range of datatype INT64"),
]


@pytest.mark.parametrize(
    "datatype, value, message", BAD_V2_VALUES, ids=[f"{d} {v!r}"[:24] for d, v, _ in BAD_V2_VALUES]
)
def test_a_v2_value_that_does_not_fit_its_declared_datatype_is_refused(datatype, value, message):
    inputs = _replace(GOOD, "age", datatype=datatype, data=[7, value])
    with pytest.raises(InvalidRequest) as error:
        RequestDecoder(SCHEMA).decode_v2_inputs(inputs)
    assert str(error.value).startswith(f"feature 'age' at row 1: {message}")
    single = Tensor("x", [1, 2], datatype, [7, value])
    with pytest.raises(InvalidRequest) as error:
        RequestDecoder(NUMERIC).decode_v2_inputs([single])
    assert str(error.value).startswith(f"input 'x' at value 1: {message}")


def test_v2_values_that_fit_their_datatype_are_accepted():
    inputs = _replace(GOOD, "age", datatype="UINT8", data=[0, 255.0])
    assert RequestDecoder(SCHEMA).decode_v2_inputs(inputs).X[:, 0].tolist() == [0.0, 255.0]
    fp16 = Tensor("x", [1, 2], "FP16", np.array([65504, np.nan], np.float16))
    assert RequestDecoder(NUMERIC).decode_v2_inputs([fp16]).X[0, 0] == 65504
    wide = Tensor("x", [1, 2], "FP64", np.array([1e39, 1.0]))  # binary data, already typed
    with pytest.raises(InvalidRequest, match="input 'x' at value 0: out of range"):
        RequestDecoder(NUMERIC).decode_v2_inputs([wide])
