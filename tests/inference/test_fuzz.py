"""Property-based fuzzing of the protocol's decoders (Hypothesis): whatever JSON a client sends, the
request decoders, the requested-outputs check and the request-id check either accept it or raise
``InvalidRequest`` (the servers' 400); no other exception (a 500) ever escapes."""

from __future__ import annotations

import math

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kfloop.errors import InvalidRequest
from kfloop.inference.requests import RequestDecoder
from kfloop.inference.responses import requested_binary
from kfloop.schema import Feature, FeatureSchema

SCHEMA = FeatureSchema(
    "churned",
    "binary",
    (Feature("age", "numeric"), Feature("tenure", "numeric"), Feature("plan", "categorical", ("basic", "pro"))),
    ("0", "1"),
)
NAMES = ["age", "tenure", "plan", "other"]
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=False),
    st.sampled_from(["basic", "pro", "", "1.5", "NaN", "x"]),
    st.text(max_size=5),
)
json_values = st.recursive(
    scalars,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.sampled_from(NAMES + ["data"]), children, max_size=4)
    ),
    max_leaves=12,
)
tensors = st.fixed_dictionaries(
    {
        "name": st.one_of(st.sampled_from(NAMES), json_values),
        "shape": st.one_of(st.lists(st.integers(-2, 4), max_size=3), json_values),
        "datatype": st.one_of(st.sampled_from(["FP32", "INT64", "BYTES", "BOOL", "fp64"]), json_values),
        "data": json_values,
    }
)
v2_bodies = st.fixed_dictionaries(
    {"inputs": st.one_of(st.lists(tensors, max_size=4), json_values)},
    optional={
        "id": json_values,
        "outputs": st.one_of(st.lists(st.fixed_dictionaries({"name": json_values}), max_size=2), json_values),
        "parameters": st.one_of(st.fixed_dictionaries({"binary_data_output": json_values}), json_values),
    },
)
v1_bodies = st.one_of(
    json_values,
    st.fixed_dictionaries(
        {
            "instances": st.one_of(
                st.lists(st.dictionaries(st.sampled_from(NAMES), scalars, max_size=4), max_size=3),
                st.lists(st.lists(scalars, min_size=3, max_size=3), max_size=3),
                json_values,
            )
        }
    ),
)
DECODER = RequestDecoder(SCHEMA, max_batch=8)
FUZZ = settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _accepted_or_refused(decode, body):
    try:
        decoded = decode(body)
    except InvalidRequest as e:
        assert str(e)  # a message for the client
        return
    assert decoded.X.dtype == np.float32 and decoded.X.shape[1] == 3 and 1 <= decoded.n_rows <= 8


@FUZZ
@given(v1_bodies)
def test_any_v1_body_is_decoded_or_refused(body):
    _accepted_or_refused(DECODER.decode_v1, body)


@FUZZ
@given(st.one_of(v2_bodies, json_values))
def test_any_v2_body_is_decoded_or_refused(body):
    _accepted_or_refused(DECODER.decode_v2, body)
    try:
        assert requested_binary(body) in (True, False)
    except InvalidRequest:
        pass


@FUZZ
@given(st.lists(st.one_of(st.none(), st.floats(), st.sampled_from(["basic", "pro", "gold"])), min_size=1, max_size=5))
def test_categorical_codes_are_a_category_or_missing(values):
    codes, unseen = DECODER.category_codes("plan", values)
    assert all(math.isnan(c) or c in (0.0, 1.0) for c in codes) and 0 <= unseen <= len(values)
