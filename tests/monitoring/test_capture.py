"""Data capture: partitioned, checksummed objects in a local folder or S3, and a writer that never
blocks or silently loses records when the store fails or the buffer is full."""

from __future__ import annotations

import datetime as dt
import logging
import re
import socket
import time

import numpy as np
import pytest

from kfloop.config import Settings
from kfloop.errors import ChecksumError, ConfigError, StorageError
from kfloop.monitoring.capture import CaptureWriter, capture_record, read_captures
from kfloop.store.objects import LocalStore, S3Store
from tests.conftest import wait_for

KEY = re.compile(
    r"^captures/churn/(?P<version>[^/]+)/(?P<day>\d{4}-\d{2}-\d{2})/"
    r"\d{8}T\d{12}Z-[0-9a-f]{12}-[0-9a-f]{64}\.(?P<format>jsonl|parquet)$"
)
START = dt.datetime(2024, 5, 1, 20, 0, tzinfo=dt.timezone.utc)


def records(n: int, start: dt.datetime = START, step_minutes: int = 30) -> list[dict]:
    """``n`` records of two model versions spread over time (half an hour apart)."""
    out = []
    for i in range(n):
        when = (start + dt.timedelta(minutes=step_minutes * i)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        features = {"age": 20 + i, "plan": ["gold", "basic", None][i % 3], "income": i * 1000.25}
        out.append(
            capture_record(
                "churn",
                str(1 + i % 2),
                features,
                [0.1 * (i % 10), 1 - 0.1 * (i % 10)],
                revision="canary" if i % 2 else "stable",
                request_id=f"req-{i}:0",
                unseen={"plan": "platinum"} if i % 7 == 0 else None,
                time=when,
            )
        )
    return out


class FlakyStore(LocalStore):
    """A LocalStore whose first ``failures`` puts fail, and whose puts take ``delay`` seconds."""

    def __init__(self, root, failures: int = 0, delay: float = 0.0):
        super().__init__(root)
        self.failures, self.delay = failures, delay

    def put(self, key, data):
        time.sleep(self.delay)
        if self.failures > 0:
            self.failures -= 1
            raise StorageError("simulated outage")
        super().put(key, data)


def test_capture_record_has_the_documented_fields():
    record = capture_record("churn", 3, {"age": 40}, 1)
    assert set(record) == {
        "request_id",
        "capture_id",
        "time",
        "model",
        "model_version",
        "revision",
        "features",
        "prediction",
        "unseen",
    }
    assert record["model_version"] == "3" and record["revision"] == "stable" and record["unseen"] == {}
    assert record["time"].endswith("Z") and dt.datetime.fromisoformat(record["time"][:-1])
    assert record["request_id"] == record["capture_id"] != capture_record("churn", 3, {}, 1)["capture_id"]


def test_capture_ids_are_unique_when_a_client_reuses_its_request_id():
    from kfloop.monitoring.capture_rows import request_records

    rows = [{"age": 1}, {"age": 2}]
    first, again = (request_records("churn", "1", "stable", "same", "t", rows, [{}, {}], [0, 1]) for _ in range(2))
    assert [r["request_id"] for r in first] == [r["request_id"] for r in again] == ["same:0", "same:1"]
    ids = [r["capture_id"] for r in first + again]
    assert len(set(ids)) == 4 and all(i.endswith((":0", ":1")) for i in ids)


@pytest.mark.parametrize("format", ["jsonl", "parquet"])
def test_records_land_partitioned_by_version_and_day_and_read_back_equal(tmp_path, format):
    store = LocalStore(tmp_path / "store")
    sent = records(120)  # 60 hours: four days, two versions
    writer = CaptureWriter(store, "churn", batch_size=25, flush_interval_s=0.05, format=format)
    for chunk in range(0, 120, 10):
        writer.add(sent[chunk : chunk + 10])
    assert writer.close(10.0)
    assert (writer.written, writer.dropped, writer.write_errors, writer.pending) == (120, 0, 0, 0)

    keys = store.list("captures/")
    partitions = {(m["version"], m["day"]) for m in map(KEY.match, keys) if m and m["format"] == format}
    assert len(partitions) == 8 and len(keys) >= 8 and all(KEY.match(k) for k in keys)
    expected = {(r["model_version"], r["time"][:10]) for r in sent}
    assert partitions == expected
    assert read_captures(store, "churn") == sent
    assert read_captures(store, "churn", version="2") == [r for r in sent if r["model_version"] == "2"]
    assert read_captures(store, "churn", version="7") == [] and read_captures(store, "other") == []


def test_since_selects_by_record_time(tmp_path):
    store = LocalStore(tmp_path / "store")
    sent = records(100)
    with CaptureWriter(store, "churn", flush_interval_s=0.05) as writer:
        writer.add(sent)
    cutoff = START + dt.timedelta(hours=30, minutes=1)
    assert read_captures(store, "churn", since=cutoff) == [r for r in sent if r["time"] > "2024-05-03T02:01"]
    assert read_captures(store, "churn", since="2024-05-02") == [r for r in sent if r["time"] >= "2024-05-02"]
    assert read_captures(store, "churn", since=dt.date(2024, 5, 3), version="1") == [
        r for r in sent if r["time"] >= "2024-05-03" and r["model_version"] == "1"
    ]


@pytest.mark.parametrize("format", ["jsonl", "parquet"])
def test_numpy_values_and_nan_are_stored_as_json(tmp_path, format):
    store = LocalStore(tmp_path / "store")
    record = capture_record(
        "churn",
        np.int64(4),
        {"age": np.int64(41), "income": np.float32(1.5), "x": float("nan")},
        np.array([0.25, 0.75]),
        time="2024-05-01T00:00:00Z",
    )
    with CaptureWriter(store, "churn", flush_interval_s=0.05, format=format) as writer:
        writer.add([record])
    [back] = read_captures(store, "churn")
    assert back["features"] == {"age": 41, "income": 1.5, "x": None}
    assert back["prediction"] == [0.25, 0.75] and back["model_version"] == "4"


def test_a_tampered_object_fails_its_checksum(tmp_path):
    store = LocalStore(tmp_path / "store")
    with CaptureWriter(store, "churn", flush_interval_s=0.05) as writer:
        writer.add(records(3))
    key = store.list("captures/")[0]
    store.put(key, store.get(key).replace(b"req-", b"REQ-"))
    with pytest.raises(ChecksumError, match="checksum mismatch"):
        read_captures(store, "churn")


def test_capture_to_s3(s3_settings):
    store = S3Store.from_settings(s3_settings)
    sent = records(60)
    with CaptureWriter(store, "churn", batch_size=20, flush_interval_s=0.05) as writer:
        writer.add(sent)
    assert writer.written == 60
    keys = store.list("captures/churn/")
    assert keys and all(KEY.match(k) for k in keys)
    assert read_captures(store, "churn") == sent
    assert read_captures(S3Store.from_settings(s3_settings), "churn", version="1") == sent[0::2]


def test_an_unreachable_store_neither_blocks_add_nor_loses_count():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    settings = Settings(s3_endpoint=f"127.0.0.1:{port}", s3_access_key="k", s3_secret_key="s", s3_bucket="nowhere")
    store = S3Store.from_settings(settings, create_bucket=False)
    writer = CaptureWriter(store, "churn", batch_size=100, flush_interval_s=0.05, backoff_base=0.05, backoff_max=0.1)
    sent = records(1000)
    started = time.monotonic()
    for chunk in range(0, 1000, 100):
        writer.add(sent[chunk : chunk + 100])
    assert time.monotonic() - started < 0.5
    wait_for(lambda: writer.write_errors >= 2)
    assert writer.written == 0 and writer.dropped == 0 and writer.pending == 1000
    assert not writer.close(timeout=0.3)
    wait_for(lambda: writer.dropped == 1000)  # nothing written, every record counted
    writer.add(sent[:5])  # after close: refused and counted
    assert (writer.written, writer.dropped, writer.pending) == (0, 1005, 0)


def test_a_store_outage_is_retried_until_it_passes(tmp_path):
    store = FlakyStore(tmp_path / "store", failures=3)
    sent = records(10)
    writer = CaptureWriter(store, "churn", flush_interval_s=0.05, backoff_base=0.02, backoff_max=0.05)
    writer.add(sent)
    assert writer.flush(5.0)
    assert (writer.written, writer.write_errors, writer.dropped) == (10, 3, 0)
    writer.close()
    assert read_captures(store, "churn") == sent


def test_add_returns_at_once_while_the_store_is_slow(tmp_path):
    store = FlakyStore(tmp_path / "store", delay=0.5)
    writer = CaptureWriter(store, "churn", batch_size=100, flush_interval_s=0.05)
    sent = records(1000)
    started = time.monotonic()
    for chunk in range(0, 1000, 50):
        writer.add(sent[chunk : chunk + 50])
    assert time.monotonic() - started < 0.2
    assert writer.pending > 800
    writer.close(0.1)


def test_a_full_buffer_drops_new_records_counts_and_warns_once(tmp_path, caplog):
    store = LocalStore(tmp_path / "store")
    writer = CaptureWriter(store, "churn", batch_size=1000, flush_interval_s=60, max_buffer=100, warn_interval_s=60)
    sent = records(160)
    with caplog.at_level(logging.WARNING, logger="kfloop.monitoring.capture"):
        writer.add(sent[:150])
        writer.add(sent[150:])
    assert (writer.dropped, writer.pending) == (60, 100)
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "dropped 50 records" in warnings[0]
    assert writer.close(5.0)
    assert (writer.written, writer.dropped) == (100, 60)
    assert read_captures(store, "churn") == sent[:100]  # the oldest are kept, the new ones dropped


def test_bad_settings_are_rejected(tmp_path):
    store = LocalStore(tmp_path)
    with pytest.raises(ConfigError, match="'a/b'"):
        CaptureWriter(store, "a/b")
    with pytest.raises(ConfigError, match="'csv'"):
        CaptureWriter(store, "churn", format="csv")
    with pytest.raises(ConfigError, match="batch_size=0"):
        CaptureWriter(store, "churn", batch_size=0)
