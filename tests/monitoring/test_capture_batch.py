"""A served request captured as one columnar batch: the same records as one dict per row, for every
request form, stored as typed columns (Parquet) or JSON Lines, split and cut by the writer, and read
back as the records; old per-record objects read alike."""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from kfloop.inference.requests import RequestDecoder, v1_rows, v2_rows, v2_tensors
from kfloop.inference.responses import answer_predictions
from kfloop.monitoring.capture import CaptureWriter, read_captures
from kfloop.monitoring.capture_batch import CaptureBatch
from kfloop.monitoring.capture_rows import request_capture, request_records, unseen_by_row
from kfloop.schema import Feature, FeatureSchema, infer_schema
from kfloop.store.objects import LocalStore
from kfloop.training.samples import churn

CATEGORICAL = ("contract", "payment_method", "internet_service")
TIME = "2024-05-01T12:00:00.000000Z"


@pytest.fixture(scope="module")
def schema():
    return infer_schema(churn(300, seed=1), "churn")


def served_rows(n: int = 12) -> list[dict]:
    """Rows as a client sends them: a missing number, a missing and an unseen category, a numeric string."""
    rows = json.loads(churn(n, seed=3).drop(columns=["churn"]).to_json(orient="records"))
    rows[1]["monthly_charges"] = None
    rows[2]["contract"] = None
    rows[3]["payment_method"] = "cheque"
    rows[4]["age"] = "41"
    return rows


def v1_answer(n: int) -> dict:
    return {"predictions": [[round(0.1 * (i % 10), 2), round(1 - 0.1 * (i % 10), 2)] for i in range(n)]}


def v2_answer(n: int) -> dict:
    data = np.array(v1_answer(n)["predictions"], dtype=np.float32)
    return {"outputs": [{"name": "other", "shape": [n], "datatype": "FP32", "data": [0.0] * n},
                        {"name": "predictions", "shape": [n, 2], "datatype": "FP32", "data": data}]}  # fmt: skip


def requests(schema, rows):
    """The request forms the transformer captures: (body, tensors) for V1 lists, V1 objects, V2 per feature
    (where a numeric string is sent as its number: a V2 FP64 tensor holds no strings)."""
    names = schema.names

    def v2_value(name, value):
        if name in CATEGORICAL:
            return value.encode() if value is not None else None
        return int(value) if isinstance(value, str) else value

    lists = {"instances": [[r[n] for n in names] for r in rows]}
    inputs = [
        {"name": n, "shape": [len(rows)], "datatype": "BYTES" if n in CATEGORICAL else "FP64",
         "data": [v2_value(n, r[n]) for r in rows]}
        for n in names
    ]  # fmt: skip
    return {
        "v1-lists": (lists, None),
        "v1-objects": ({"instances": rows}, None),
        "v2-columns": (None, v2_tensors({"inputs": inputs})),
    }


def expected_records(schema, body, tensors, decoded, answer, request_id="req"):
    """The records the per-row path (``request_records``) makes of the same request."""
    names = schema.names
    rows = v2_rows(tensors, names) if tensors is not None else v1_rows(body, names)
    return request_records(
        "churn", "3", "stable", request_id, TIME, rows, unseen_by_row(rows, decoded, names), answer_predictions(answer)
    )


def captured(schema, body, tensors, answer, request_id="req", time=TIME) -> CaptureBatch:
    decoder = RequestDecoder(schema)
    decoded = decoder.decode_v2_inputs(tensors) if tensors is not None else decoder.decode_v1(body)
    return request_capture(
        "churn", "3", "stable", request_id, time, schema.names, decoded, answer, body=body, tensors=tensors
    )


def same_but_capture_ids(got: list[dict], want: list[dict]) -> bool:
    strip = [({**r, "capture_id": r["capture_id"].split(":")[1]}) for r in got]
    return strip == [{**r, "capture_id": r["capture_id"].split(":")[1]} for r in want]


@pytest.mark.parametrize("form", ["v1-lists", "v1-objects", "v2-columns"])
@pytest.mark.parametrize("answer", [v1_answer, v2_answer])
def test_a_batch_holds_the_records_the_per_row_path_makes(schema, form, answer):
    rows = served_rows()
    body, tensors = requests(schema, rows)[form]
    decoder = RequestDecoder(schema)
    decoded = decoder.decode_v2_inputs(tensors) if tensors is not None else decoder.decode_v1(body)
    batch = captured(schema, body, tensors, answer(len(rows)))
    want = expected_records(schema, body, tensors, decoded, answer(len(rows)))
    got = batch.records()
    assert same_but_capture_ids(got, want)
    assert got[3]["unseen"] == {"payment_method": "cheque"} and got[2]["unseen"] == {}
    assert got[4]["features"]["age"] == ("41" if body else 41) and got[1]["features"]["monthly_charges"] is None
    assert len({r["capture_id"].split(":")[0] for r in got}) == 1 and got[5]["capture_id"].endswith(":5")
    window = batch.slice(3, 7)
    assert window.n_rows == 4 and window.records() == got[3:7]


def test_a_numeric_matrix_tensor_is_captured_by_feature_name():
    frame = churn(50, seed=2)[["age", "tenure_months", "monthly_charges", "churn"]]
    schema = infer_schema(frame, "churn")
    rows = frame.drop(columns=["churn"]).to_numpy()
    tensors = v2_tensors({"inputs": [{"name": "x", "shape": [5, 3], "datatype": "FP64", "data": rows[:5].tolist()}]})
    batch = captured(schema, None, tensors, v1_answer(5))
    assert batch.layout == "matrix"
    assert [r["features"] for r in batch.records()] == [dict(zip(schema.names, row)) for row in rows[:5].tolist()]


def test_an_answer_without_a_prediction_per_row_is_refused(schema):
    body, tensors = requests(schema, served_rows(6))["v1-lists"]
    with pytest.raises(ValueError, match="5 predictions for 6 rows"):
        captured(schema, body, tensors, v1_answer(5))


@pytest.mark.parametrize("format", ["jsonl", "parquet"])
def test_batches_are_stored_split_to_the_batch_size_and_read_back_as_their_records(tmp_path, schema, format):
    store = LocalStore(tmp_path / "store")
    sent = []
    with CaptureWriter(store, "churn", batch_size=25, flush_interval_s=0.05, format=format) as writer:
        for k, (form, (body, tensors)) in enumerate(requests(schema, served_rows(30)).items()):
            batch = captured(schema, body, tensors, v1_answer(30), request_id=f"r{k}-{form}")
            writer.add(batch)
            sent += batch.records()
    assert (writer.written, writer.dropped, writer.pending) == (90, 0, 0)
    keys = store.list("captures/churn/3/")
    assert len(keys) == 4 and all(k.endswith(f".{format}") for k in keys)  # 90 records, at most 25 each
    assert sorted(read_captures(store, "churn"), key=lambda r: r["request_id"]) == sorted(
        sent, key=lambda r: r["request_id"]
    )


def test_a_parquet_object_has_one_typed_column_per_feature(tmp_path, schema):
    store = LocalStore(tmp_path / "store")
    rows = served_rows()
    rows[4]["age"] = 41.5  # every age a number
    body, tensors = requests(schema, rows)["v1-objects"]
    with CaptureWriter(store, "churn", flush_interval_s=0.05, format="parquet") as writer:
        writer.add(captured(schema, body, tensors, v1_answer(len(rows))))
    [key] = store.list("captures/")
    table = pq.ParquetFile(pa.BufferReader(store.get(key))).read(use_threads=False)  # (see capture_format)
    features = table.schema.field("features").type
    assert {features.field(i).name: str(features.field(i).type) for i in range(features.num_fields)} == {
        "age": "double",
        "tenure_months": "int64",
        "monthly_charges": "double",
        "total_charges": "double",
        "support_calls": "int64",
        "contract": "string",
        "payment_method": "string",
        "internet_service": "string",
    }
    assert table.schema.field("prediction").type == pa.list_(pa.float64())
    assert json.loads(table.schema.metadata[b"kfloop.json_columns"]) == ["unseen"]
    assert b"kfloop.json_features" not in table.schema.metadata
    group = pq.ParquetFile(pa.BufferReader(store.get(key))).metadata.row_group(0)
    encodings = {group.column(i).path_in_schema: group.column(i).encodings for i in range(group.num_columns)}
    assert "DELTA_BINARY_PACKED" in encodings["features.tenure_months"]  # integer features delta bit-packed
    assert "DELTA_BINARY_PACKED" in encodings["features.support_calls"]
    assert "DELTA_BINARY_PACKED" not in encodings["features.age"]


def test_a_feature_of_mixed_types_and_nan_read_back_as_received(tmp_path, schema):
    store = LocalStore(tmp_path / "store")
    rows = served_rows()  # ages are numbers, and "41": a field of JSON text
    body, _ = requests(schema, rows)["v1-objects"]
    _, tensors = requests(schema, rows)["v2-columns"]
    nan = np.full(len(rows), np.nan)  # NaN in a binary tensor is missing: stored as null
    tensors = [t._replace(data=nan) if t.name == "total_charges" else t for t in tensors]
    with CaptureWriter(store, "churn", flush_interval_s=0.05, format="parquet") as writer:
        writer.add(captured(schema, body, None, v1_answer(len(rows)), "a"))
        writer.add(captured(schema, None, tensors, v1_answer(len(rows)), "b"))
    back = {r["request_id"]: r for r in read_captures(store, "churn")}
    assert [back[f"a:{i}"]["features"]["age"] for i in range(len(rows))] == [r["age"] for r in rows]
    assert back["a:4"]["features"]["age"] == "41" and back["b:4"]["features"]["age"] == 41
    assert all(back[f"b:{i}"]["features"]["total_charges"] is None for i in range(len(rows)))
    assert back["b:3"]["unseen"] == {"payment_method": "cheque"} and back["a:3"]["unseen"] == back["b:3"]["unseen"]


@pytest.mark.parametrize(
    ("rows", "stored_type"),
    [
        ([[1.5, None, 3], [4, 5.25, -6], [0.1, 2**40, 1e-300]], "double"),  # numbers and nulls: one type
        ([[1.5, 2, 3], [4, 5.25, -6]], "double"),  # no null: the columns are strided views of one array
        ([[1, 2, 3], [4, None, 6]], "int64"),
        ([["a", "b", "c"], ["d", None, "f"]], "string"),
    ],
)
def test_rows_of_numbers_are_stored_as_typed_columns_in_one_conversion_and_read_back(tmp_path, rows, stored_type):
    names = ("x", "y", "z")
    store = LocalStore(tmp_path / "store")
    batches = [
        CaptureBatch("m", "1", "stable", TIME, f"r{k}", f"c{k}", names, "rows", rows, [0.5] * len(rows), 0, len(rows))
        for k in range(3)
    ]
    with CaptureWriter(store, "m", flush_interval_s=0.05, format="parquet") as writer:
        for batch in batches:
            writer.add(batch)
    [key] = store.list("captures/")
    table = pq.ParquetFile(pa.BufferReader(store.get(key))).read(use_threads=False)
    features = table.schema.field("features").type
    assert [str(features.field(i).type) for i in range(features.num_fields)] == [stored_type] * 3
    assert b"kfloop.json_features" not in table.schema.metadata
    back = {r["request_id"]: r["features"] for r in read_captures(store, "m")}
    for k in range(3):
        for i, row in enumerate(rows):
            assert back[f"r{k}:{i}"] == dict(zip(names, row))  # (3 == 3.0)


def test_rows_of_numbers_are_stored_from_the_decoders_float64_rows_as_received(tmp_path):
    schema = FeatureSchema("y", "regression", tuple(Feature(name, "numeric") for name in ("a", "b")))
    rows = [[0.1, 41], [None, 2.5e-7], [123456789.123, -3]]
    body = {"instances": rows}
    batch = request_capture("m", "1", "stable", "r", TIME, schema.names, RequestDecoder(schema).decode_v1(body),
                            {"predictions": [0.5, 0.25, 0.75]}, body=body)  # fmt: skip
    assert batch.exact is not None and "exact" not in batch.to_journal()  # the journal's line holds the rows
    store = LocalStore(tmp_path / "store")
    with CaptureWriter(store, "m", flush_interval_s=0.05, format="parquet") as writer:
        writer.add(batch)
        writer.add(CaptureBatch.from_journal({**batch.to_journal(), "request_id": "replayed"}))  # no float64 rows
    back = {r["request_id"]: r["features"] for r in read_captures(store, "m")}
    for request in ("r", "replayed"):
        assert [[back[f"{request}:{i}"][n] for n in ("a", "b")] for i in range(3)] == rows  # 0.1, not float32's


def test_a_full_buffer_keeps_the_first_rows_of_a_batch(tmp_path, schema):
    store = LocalStore(tmp_path / "store")
    body, tensors = requests(schema, served_rows(30))["v1-lists"]
    writer = CaptureWriter(store, "churn", batch_size=1000, flush_interval_s=60, max_buffer=20, format="parquet")
    batch = captured(schema, body, tensors, v1_answer(30))
    writer.add(batch)
    writer.add(batch)
    assert (writer.dropped, writer.pending) == (40, 20)
    assert writer.close(5.0) and writer.written == 20
    assert (
        sorted(read_captures(store, "churn"), key=lambda r: int(r["request_id"].split(":")[1]))
        == (batch.records()[:20])
    )


def test_records_and_batches_share_a_writer(tmp_path, schema):
    store = LocalStore(tmp_path / "store")
    body, tensors = requests(schema, served_rows(6))["v1-lists"]
    batch = captured(schema, body, tensors, v1_answer(6))
    record = {**batch.records()[0], "request_id": "single:0"}
    with CaptureWriter(store, "churn", flush_interval_s=0.05, format="parquet") as writer:
        writer.add(batch)
        writer.add([record])
    assert len(store.list("captures/")) == 2  # the record's own object, in the per-record layout
    assert sorted(read_captures(store, "churn"), key=lambda r: r["request_id"]) == sorted(
        [*batch.records(), record], key=lambda r: r["request_id"]
    )


@pytest.mark.parametrize("format", ["jsonl", "parquet"])
def test_a_time_in_epoch_seconds_is_stored_as_rfc3339_in_its_day(tmp_path, schema, format):
    store = LocalStore(tmp_path / "store")
    body, _ = requests(schema, served_rows(6))["v1-lists"]
    batch = captured(schema, body, None, v1_answer(6), time=1714521599.5)  # 2024-04-30T23:59:59.5Z
    with CaptureWriter(store, "churn", flush_interval_s=0.05, format=format, journal_dir=tmp_path / "j") as writer:
        writer.add(batch)
    assert [k.split("/")[3] for k in store.list("captures/")] == ["2024-04-30"]
    assert {r["time"] for r in read_captures(store, "churn")} == {"2024-04-30T23:59:59.500000Z"}
