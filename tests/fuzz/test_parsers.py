"""Property-based fuzzing (Hypothesis) of everything that parses what a client sends: the V1/V2 request
decoders, the CloudEvent parser, the trigger's view of an event and the feedback parser. Arbitrary JSON,
and arbitrary values in bodies of the right shape, give a result or a clear ``InvalidRequest``: never
another exception (which a server turns into a 500). Bounded, derandomized examples (the same each
run, no database), no deadline: about 10 s."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kfloop.errors import InvalidRequest
from kfloop.events.cloudevents import parse_event
from kfloop.inference.requests import Decoded, RequestDecoder
from kfloop.inference.tensors import NUMERIC_DATATYPES
from kfloop.monitoring.feedback import FeedbackStore
from kfloop.names import DRIFT_DETECTED, FEEDBACK, QUALITY_DEGRADED
from kfloop.retraining.policy import read_signal
from kfloop.schema import infer_schema
from kfloop.store.objects import LocalStore

FUZZ = settings(
    max_examples=150, deadline=None, database=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow]
)

FRAME = pd.DataFrame(
    {
        "age": [31, 45, 22, 60],
        "income": [52.5, None, 31.0, 88.25],
        "plan": ["pro", "basic", None, "pro"],
        "y": [0, 1, 0, 1],
    }
)
SCHEMA = infer_schema(FRAME, "y")
NUMERIC = infer_schema(FRAME.drop(columns=["plan"]), "y")
NAMES = SCHEMA.names

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=8),
    st.sampled_from(["NaN", "Infinity", "-inf", "1e39", " 45 ", "pro", "", "0x10"]),
)
json_values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=6), inner, max_size=5),
    max_leaves=25,
)
names = st.sampled_from([*NAMES, "input-0", "", "x"]) | st.text(max_size=6)
datatypes = st.sampled_from(sorted(NUMERIC_DATATYPES | {"BYTES", "BOOL", "fp32", ""})) | json_values
shapes = st.lists(st.integers(-2, 4), max_size=3) | json_values
tensors = (
    st.fixed_dictionaries(
        {"name": names, "shape": shapes, "datatype": datatypes, "data": json_values | st.lists(scalars, max_size=6)}
    )
    | json_values
)
v1_bodies = json_values | st.fixed_dictionaries(
    {"instances": json_values | st.lists(st.lists(scalars, max_size=4) | st.dictionaries(names, scalars), max_size=4)}
)
v2_bodies = json_values | st.fixed_dictionaries(
    {"inputs": st.lists(tensors, max_size=4)}, optional={"id": json_values, "outputs": json_values}
)


def decodes_or_refuses(decode, body) -> None:
    try:
        out = decode(body)
    except InvalidRequest as e:
        assert str(e)  # a message naming what is wrong
        return
    assert isinstance(out, Decoded) and out.X.dtype == np.float32 and out.n_rows >= 1
    assert not np.isinf(out.X).any()  # the value rule: nothing infinite reaches the model


@pytest.mark.parametrize("schema", [SCHEMA, NUMERIC], ids=["categorical", "all-numeric"])
@FUZZ
@given(body=v1_bodies)
def test_v1_decoder_gives_a_matrix_or_invalid_request(schema, body):
    decodes_or_refuses(RequestDecoder(schema, max_batch=3).decode_v1, body)


@pytest.mark.parametrize("schema", [SCHEMA, NUMERIC], ids=["categorical", "all-numeric"])
@FUZZ
@given(body=v2_bodies)
def test_v2_decoder_gives_a_matrix_or_invalid_request(schema, body):
    decodes_or_refuses(RequestDecoder(schema, max_batch=3).decode_v2, body)


def good_v2(n: int) -> dict:
    return {
        "inputs": [
            {"name": "age", "shape": [n], "datatype": "INT64", "data": [30] * n},
            {"name": "income", "shape": [n], "datatype": "FP32", "data": [1.5] * n},
            {"name": "plan", "shape": [n], "datatype": "BYTES", "data": ["pro"] * n},
        ]
    }


@FUZZ
@given(
    feature=st.sampled_from(["age", "income", "plan"]),
    datatype=st.sampled_from(sorted(NUMERIC_DATATYPES | {"BYTES"})),
    values=st.lists(scalars, min_size=2, max_size=2),
)
def test_any_values_in_a_well_formed_v2_body(feature, datatype, values):
    body = good_v2(2)
    for t in body["inputs"]:
        if t["name"] == feature:
            t.update(datatype=datatype, data=values)
    decodes_or_refuses(RequestDecoder(SCHEMA).decode_v2, body)


ATTRIBUTES = st.fixed_dictionaries(
    {
        "specversion": st.sampled_from(["1.0"]) | json_values,
        "id": st.text(min_size=1, max_size=10) | json_values,
        "source": st.sampled_from(["s"]) | json_values,
        "type": st.sampled_from([DRIFT_DETECTED, QUALITY_DEGRADED, FEEDBACK]) | json_values,
    },
    optional={
        "time": json_values | st.sampled_from(["2026-01-01T00:00:00Z"]),
        "data": json_values,
        "subject": json_values,
    },
)


def parses_or_refuses(headers: dict, body: bytes) -> None:
    try:
        event = parse_event(headers, body)
    except InvalidRequest as e:
        assert str(e)
        return
    assert isinstance(event, dict) and event["specversion"] == "1.0" and isinstance(event["id"], str)
    try:  # what the trigger reads of it
        read_signal(event)
    except InvalidRequest as e:
        assert str(e)


@FUZZ
@given(doc=ATTRIBUTES | json_values)
def test_structured_events_give_an_event_or_invalid_request(doc):
    parses_or_refuses({"content-type": "application/cloudevents+json"}, json.dumps(doc).encode())


@FUZZ
@given(
    attributes=st.dictionaries(
        st.sampled_from(["ce-specversion", "ce-id", "ce-source", "ce-type", "ce-time", "content-type"]),
        st.text(max_size=12) | st.sampled_from(["1.0", DRIFT_DETECTED, "application/json", "text/plain", "%ZZ"]),
    ),
    data=json_values | st.binary(max_size=20),
)
def test_binary_events_give_an_event_or_invalid_request(attributes, data):
    body = data if isinstance(data, bytes) else json.dumps(data).encode()
    parses_or_refuses({"ce-specversion": "1.0", **attributes}, body)


@FUZZ
@given(
    data=json_values | st.fixed_dictionaries({"model": json_values | st.just("churn")}, optional={"data": json_values})
)
def test_the_trigger_reads_any_event_data_or_refuses_it(data):
    for kind in (DRIFT_DETECTED, QUALITY_DEGRADED, FEEDBACK):
        try:
            read_signal({"specversion": "1.0", "id": "e-1", "source": "s", "type": kind, "data": data})
        except InvalidRequest as e:
            assert str(e)


@pytest.fixture(scope="module")
def feedback(tmp_path_factory) -> FeedbackStore:
    return FeedbackStore(LocalStore(tmp_path_factory.mktemp("home")))


label = st.fixed_dictionaries(
    {"request_id": st.text(max_size=8) | json_values, "label": json_values}, optional={"time": json_values}
)


@FUZZ
@given(model=st.just("churn") | json_values, labels=st.lists(label | json_values, max_size=4) | json_values)
def test_feedback_gives_a_count_or_invalid_request(feedback, model, labels):
    try:
        out = feedback.add(model, SCHEMA, labels)
    except InvalidRequest as e:
        assert str(e)
        return
    raise AssertionError(f"no capture exists, yet {labels!r} was accepted: {out}")


@FUZZ
@given(
    header=st.fixed_dictionaries(
        {
            "inputs": st.lists(
                st.fixed_dictionaries(
                    {
                        "name": names,
                        "shape": shapes,
                        "datatype": datatypes,
                        "parameters": st.fixed_dictionaries({"binary_data_size": json_values | st.integers(0, 40)}),
                    }
                )
                | json_values,
                max_size=3,
            )
        }
    )
    | json_values,
    tail=st.binary(max_size=60),
    length=st.none() | st.text(max_size=4) | st.integers(-5, 200).map(str),
)
def test_binary_bodies_are_checked_or_refused(header, tail, length):
    from kfloop.inference.requests import check_binary_request

    text = json.dumps(header).encode()
    try:
        check_binary_request(text + tail, str(len(text)) if length is None else length)
    except InvalidRequest as e:
        assert str(e)
