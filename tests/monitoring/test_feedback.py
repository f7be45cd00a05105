"""Ground truth: label batches are checked as a whole (nothing stored on any error), stored as
checksummed objects, joined with the captures they name, and relabeling keeps the latest label."""

from __future__ import annotations

import datetime as dt
import math

import pandas as pd
import pytest

from kfloop.errors import ChecksumError, InvalidRequest
from kfloop.monitoring.capture import CaptureWriter, capture_record
from kfloop.monitoring.feedback import FeedbackStore, labeled_frame, read_labels
from kfloop.schema import infer_schema, label_key
from kfloop.store.objects import LocalStore, S3Store
from kfloop.training.samples import churn

START = dt.datetime(2024, 5, 1, 22, 0, tzinfo=dt.timezone.utc)


def write_captures(
    store,
    frame: pd.DataFrame,
    version: str = "1",
    prefix: str = "req",
    start=START,
    rows_per_request: int = 1,
    target: str = "churn",
) -> list[dict]:
    """Capture records of ``frame``'s rows, one minute apart, written with a CaptureWriter."""
    records = []
    for i, row in enumerate(frame.drop(columns=[target]).to_dict("records")):
        when = (start + dt.timedelta(minutes=i)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        request_id = f"{prefix}{i // rows_per_request}:{i % rows_per_request}"
        records.append(
            capture_record(
                "churn",
                version,
                row,
                [0.25 + 0.5 * (i % 2), 0.75 - 0.5 * (i % 2)],
                revision="canary" if i % 3 == 0 else "stable",
                request_id=request_id,
                time=when,
            )
        )
    writer = CaptureWriter(store, "churn", batch_size=10_000, flush_interval_s=0.05)
    writer.add(records)
    assert writer.close()
    return records


class CountingStore(LocalStore):
    """A LocalStore that counts reads of capture objects."""

    capture_reads = 0

    def get(self, key):
        if key.startswith("captures/"):
            self.capture_reads += 1
        return super().get(key)


@pytest.fixture
def data() -> pd.DataFrame:
    return churn(n_rows=60, seed=3)


@pytest.fixture
def schema(data):
    return infer_schema(data, "churn")


@pytest.fixture
def store(tmp_path) -> CountingStore:
    return CountingStore(tmp_path / "store")


def test_labels_are_joined_with_the_rows_they_name(store, schema, data):
    records = write_captures(store, data)
    labels = [{"request_id": f"req{i}:0", "label": int(data["churn"][i])} for i in range(0, 60, 3)]
    assert FeedbackStore(store).add("churn", schema, labels) == {"accepted": 20}

    frame = labeled_frame(store, "churn", schema)
    assert list(frame.columns) == [
        "request_id",
        *schema.names,
        "churn",
        "prediction",
        "model",
        "model_version",
        "revision",
        "time",
        "label_time",
    ]
    assert list(frame["request_id"]) == [f"req{i}:0" for i in range(0, 60, 3)]
    for _, row in frame.iterrows():
        i = int(row["request_id"][3:-2])
        assert {name: row[name] for name in schema.names} == records[i]["features"]
        assert row["churn"] == label_key(data["churn"][i]) and row["prediction"] == records[i]["prediction"]
        assert row["revision"] == records[i]["revision"] and row["model_version"] == "1"
        assert row["time"] == pd.Timestamp(records[i]["time"])
    assert frame["time"].is_monotonic_increasing and frame["label_time"].notna().all()
    keys = store.list("feedback/")
    assert len(keys) == 1 and keys[0].startswith(f"feedback/churn/{dt.datetime.now(dt.timezone.utc):%Y-%m-%d}/")


def test_unknown_request_ids_reject_the_whole_batch(store, schema, data):
    write_captures(store, data)
    labels = [
        {"request_id": "req1:0", "label": 1},
        {"request_id": "nope:0", "label": 0},
        {"request_id": "req2:0", "label": 0},
        {"request_id": "req999:0", "label": 1},
    ]
    with pytest.raises(InvalidRequest, match=r"2 of 4 labels .*'nope:0', 'req999:0'"):
        FeedbackStore(store).add("churn", schema, labels)
    assert store.list("feedback/") == []
    with pytest.raises(InvalidRequest, match="not captured"):
        FeedbackStore(store).add("other-model", schema, [{"request_id": "req1:0", "label": 1}])


@pytest.mark.parametrize("bad", [True, None, [1], {"v": 1}, "2", "yes", 0.5, math.nan, 7])
def test_classification_labels_must_be_known_classes(store, schema, data, bad):
    write_captures(store, data)
    labels = [{"request_id": "req0:0", "label": 1}, {"request_id": "req1:0", "label": bad}]
    with pytest.raises(InvalidRequest, match=r"req1:0.*expected one of the classes \['0', '1'\]"):
        FeedbackStore(store).add("churn", schema, labels)
    assert store.list("feedback/") == []


@pytest.mark.parametrize("bad", [True, None, "12.5", [1.0], math.nan, math.inf])
def test_regression_labels_must_be_finite_numbers(store, data, bad):
    schema = infer_schema(data, "monthly_charges", task="regression")
    write_captures(store, data, target="monthly_charges")
    with pytest.raises(InvalidRequest, match="req0:0.*finite number"):
        FeedbackStore(store).add("churn", schema, [{"request_id": "req0:0", "label": bad}])
    assert FeedbackStore(store).add("churn", schema, [{"request_id": "req0:0", "label": 12}]) == {"accepted": 1}
    assert labeled_frame(store, "churn", schema)["monthly_charges"].tolist() == [12.0]


@pytest.mark.parametrize(
    "labels, message",
    [
        ([], "non-empty list"),
        ({"request_id": "req0:0", "label": 1}, "non-empty list"),
        (["req0:0"], "label 0"),
        ([{"label": 1}], "request_id must be"),
        ([{"request_id": "req0:0"}], "no 'label'"),
        ([{"request_id": "req0:0", "label": 1, "time": "yesterday"}], "RFC 3339"),
    ],
)
def test_malformed_batches_are_rejected(store, schema, data, labels, message):
    write_captures(store, data)
    with pytest.raises(InvalidRequest, match=message):
        FeedbackStore(store).add("churn", schema, labels)
    assert store.list("feedback/") == []


def test_equivalent_label_spellings_and_label_time(store, schema, data):
    write_captures(store, data)
    FeedbackStore(store).add(
        "churn",
        schema,
        [
            {"request_id": "req0:0", "label": 1.0},
            {"request_id": "req1:0", "label": "0", "time": "2024-05-03T10:00:00+02:00"},
        ],
    )
    frame = labeled_frame(store, "churn", schema).set_index("request_id")
    assert frame.loc["req0:0", "churn"] == "1" and frame.loc["req1:0", "churn"] == "0"
    assert frame.loc["req1:0", "label_time"] == pd.Timestamp("2024-05-03T08:00:00Z")


def test_relabeling_keeps_the_latest_label(store, schema, data):
    write_captures(store, data)
    feedback = FeedbackStore(store)
    feedback.add("churn", schema, [{"request_id": "req0:0", "label": 1}, {"request_id": "req1:0", "label": 1}])
    feedback.add(
        "churn",
        schema,
        [
            {"request_id": "req0:0", "label": 0},
            {"request_id": "req0:0", "label": 1},
            {"request_id": "req0:0", "label": 0},
        ],
    )
    frame = labeled_frame(store, "churn", schema).set_index("request_id")
    assert len(frame) == 2 and frame.loc["req0:0", "churn"] == "0" and frame.loc["req1:0", "churn"] == "1"


def test_a_one_row_request_can_be_labeled_by_its_bare_id(store, schema, data):
    write_captures(store, data.head(6), prefix="single")
    write_captures(store, data.head(6), prefix="multi", rows_per_request=3, start=START + dt.timedelta(hours=1))
    FeedbackStore(store).add(
        "churn", schema, [{"request_id": "single4", "label": 1}, {"request_id": "multi1:2", "label": 0}]
    )
    assert sorted(read_labels(store, "churn")) == ["multi1:2", "single4:0"]
    with pytest.raises(InvalidRequest, match="multi0"):
        FeedbackStore(store).add("churn", schema, [{"request_id": "multi0", "label": 1}])


def test_the_capture_index_reads_each_capture_object_once(store, schema, data):
    write_captures(store, data.head(30), version="1")
    write_captures(store, data.head(30), version="2", prefix="v2-")
    feedback = FeedbackStore(store)
    feedback.add("churn", schema, [{"request_id": "req0:0", "label": 1}])
    assert store.capture_reads == 2
    feedback.add("churn", schema, [{"request_id": "req5:0", "label": 1}, {"request_id": "v2-7:0", "label": 0}])
    assert store.capture_reads == 2
    write_captures(store, data.tail(10), version="2", prefix="late", start=START + dt.timedelta(days=1))
    feedback.add("churn", schema, [{"request_id": "late3:0", "label": 0}])
    assert store.capture_reads == 3
    with pytest.raises(InvalidRequest):
        feedback.add("churn", schema, [{"request_id": "late99:0", "label": 0}])
    assert store.capture_reads == 3


def test_filters_by_version_and_time(store, schema, data):
    write_captures(store, data.head(20), version="1")
    write_captures(store, data.head(20), version="2", prefix="b", start=START + dt.timedelta(days=2))
    labels = [{"request_id": f"{p}{i}:0", "label": 0} for p in ("req", "b") for i in range(20)]
    FeedbackStore(store).add("churn", schema, labels)
    assert len(labeled_frame(store, "churn", schema)) == 40
    assert set(labeled_frame(store, "churn", schema, version="2")["request_id"]) == {f"b{i}:0" for i in range(20)}
    since = START + dt.timedelta(days=2, minutes=15)
    assert list(labeled_frame(store, "churn", schema, since=since)["request_id"]) == [f"b{i}:0" for i in range(15, 20)]


def test_no_labels_gives_an_empty_frame_with_the_columns(store, schema, data):
    write_captures(store, data.head(5))
    frame = labeled_frame(store, "churn", schema)
    assert frame.empty and "churn" in frame.columns and "label_time" in frame.columns


def test_a_tampered_feedback_object_fails_its_checksum(store, schema, data):
    write_captures(store, data.head(5))
    FeedbackStore(store).add("churn", schema, [{"request_id": "req0:0", "label": 1}])
    key = store.list("feedback/")[0]
    store.put(key, store.get(key).replace(b'"1"', b'"0"'))
    with pytest.raises(ChecksumError, match="checksum mismatch"):
        labeled_frame(store, "churn", schema)


def test_feedback_on_s3(s3_settings, schema, data):
    store = S3Store.from_settings(s3_settings)
    write_captures(store, data.head(10))
    assert FeedbackStore(store).add("churn", schema, [{"request_id": "req2:0", "label": 1}]) == {"accepted": 1}
    with pytest.raises(InvalidRequest):
        FeedbackStore(store).add(
            "churn", schema, [{"request_id": "req2:0", "label": 1}, {"request_id": "x", "label": 1}]
        )
    assert len(store.list("feedback/churn/")) == 1
    frame = labeled_frame(store, "churn", schema)
    assert list(frame["request_id"]) == ["req2:0"] and frame["churn"].tolist() == ["1"]
