"""The capture journal: records are on local disk before ``add`` returns and stored exactly once
a batch is written; a killed writer's records are replayed by the next one (a real kill -9 of a
process adding records as fast as it can)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import pytest

from kfloop.errors import ConfigError
from kfloop.monitoring.capture import CaptureJournal, CaptureWriter, capture_record, read_captures
from kfloop.monitoring.capture_batch import CaptureBatch
from kfloop.store.objects import LocalStore
from kfloop.timestamps import rfc3339
from tests.conftest import wait_for


def record(i: int) -> dict:
    return capture_record("churn", "1", {"age": i}, 0.5, request_id=f"r-{i}")


def journal_lines(folder) -> int:
    return sum(len(p.read_bytes().splitlines()) for p in folder.glob("*.jsonl"))


def test_records_are_journaled_before_add_returns_and_the_journal_empties_once_stored(tmp_path):
    store, folder = LocalStore(tmp_path / "home"), tmp_path / "journal"
    writer = CaptureWriter(store, "churn", batch_size=1000, flush_interval_s=60, journal_dir=folder)
    writer.add([record(i) for i in range(5)])
    writer.add([record(5)])
    assert journal_lines(folder) == 6 and writer.journal.pending == 6 and read_captures(store, "churn") == []
    assert writer.flush(10)
    assert journal_lines(folder) == 0 and writer.journal.pending == 0
    assert sorted(r["request_id"] for r in read_captures(store, "churn")) == sorted(f"r-{i}" for i in range(6))
    writer.add([record(6)])  # a new segment after the batch
    assert writer.close(10) and journal_lines(folder) == 0
    assert len(read_captures(store, "churn")) == 7


def test_a_journal_folder_has_one_writer_at_a_time(tmp_path):
    writer = CaptureWriter(LocalStore(tmp_path / "home"), "churn", journal_dir=tmp_path / "journal")
    with pytest.raises(ConfigError, match="is in use by another process"):
        CaptureJournal(tmp_path / "journal")
    writer.close(5)
    CaptureJournal(tmp_path / "journal").close()  # free again


def test_records_a_stopped_writer_could_not_store_are_replayed_by_the_next(tmp_path):
    folder = tmp_path / "journal"

    class DownStore(LocalStore):
        def put(self, key, data):
            raise OSError("store down")

    down = CaptureWriter(DownStore(tmp_path / "home"), "churn", flush_interval_s=0.05, journal_dir=folder)
    down.add([record(i) for i in range(3)])
    assert not down.close(0.3)  # could not store them: they stay in the journal
    assert journal_lines(folder) == 3
    store = LocalStore(tmp_path / "home")
    writer = CaptureWriter(store, "churn", flush_interval_s=0.05, journal_dir=folder)
    assert writer.replayed == 3 and writer.close(10)
    assert sorted(r["request_id"] for r in read_captures(store, "churn")) == ["r-0", "r-1", "r-2"]
    assert journal_lines(folder) == 0


def test_a_torn_last_line_is_skipped_on_replay(tmp_path):
    folder = tmp_path / "journal"
    folder.mkdir()
    (folder / "000000000001.jsonl").write_bytes(json.dumps(record(1)).encode() + b"\n" + b'{"request_id": "r-')
    store = LocalStore(tmp_path / "home")
    writer = CaptureWriter(store, "churn", flush_interval_s=0.05, journal_dir=folder)
    assert writer.replayed == 1 and writer.close(10)
    assert [r["request_id"] for r in read_captures(store, "churn")] == ["r-1"]


def batch(i: int, rows: int = 3) -> CaptureBatch:
    """A served request of ``rows`` rows (V1 lists of one feature), as the transformer captures it."""
    values = [[i * 10 + j] for j in range(rows)]
    return CaptureBatch(
        "churn", "1", "stable", rfc3339(), f"b-{i}", f"c{i}", ("age",), "rows", values, [0.5] * rows, 0, rows
    )


@pytest.mark.parametrize("format", ["jsonl", "parquet"])
def test_batches_are_journaled_one_line_each_and_replayed_by_the_next_writer(tmp_path, format):
    folder = tmp_path / "journal"

    class DownStore(LocalStore):
        def put(self, key, data):
            raise OSError("store down")

    down = CaptureWriter(
        DownStore(tmp_path / "home"), "churn", flush_interval_s=0.05, journal_dir=folder, format=format
    )
    sent = [batch(0, 7), batch(1, 5).slice(1, 5)]  # a window of a request: rows 1-4 only
    for b in sent:
        down.add(b)
    down.add([record(9)])
    assert not down.close(0.3)
    assert journal_lines(folder) == 3
    store = LocalStore(tmp_path / "home")
    writer = CaptureWriter(store, "churn", batch_size=4, flush_interval_s=0.05, journal_dir=folder, format=format)
    assert writer.replayed == 12 and writer.close(10) and journal_lines(folder) == 0
    stored = sorted(read_captures(store, "churn"), key=lambda r: r["request_id"])
    expected = [*sent[0].records(), *sent[1].records(), {**record(9), "time": stored[-1]["time"]}]
    assert [r["request_id"] for r in stored] == sorted(r["request_id"] for r in expected)
    assert {r["request_id"]: r for r in stored}["b-1:4"] == sent[1].records()[-1]
    assert [r["request_id"] for r in sent[1].records()] == ["b-1:1", "b-1:2", "b-1:3", "b-1:4"]


WRITER = """
import sys
from kfloop.monitoring.capture import CaptureWriter, capture_record
from kfloop.monitoring.capture_batch import CaptureBatch
from kfloop.store.objects import LocalStore
from kfloop.timestamps import rfc3339
writer = CaptureWriter(LocalStore(sys.argv[1]), "churn", batch_size=200, flush_interval_s=0.2, journal_dir=sys.argv[2],
                       format=sys.argv[4])
rows = int(sys.argv[3])
i = 0
while True:
    if rows == 1:
        writer.add([capture_record("churn", "1", {"age": i}, 0.5, request_id=f"r-{i}:0")])
    else:  # a request of `rows` rows, as the transformer hands it over
        writer.add(CaptureBatch("churn", "1", "stable", rfc3339(), f"r-{i}", f"c-{i}", ("age",), "rows",
                                [[i]] * rows, [0.5] * rows, 0, rows))
    print(i, flush=True)  # "answered": only after add returned
    i += 1
"""


@pytest.mark.processes
@pytest.mark.parametrize(("rows", "format"), [(1, "jsonl"), (3, "parquet")])
def test_kill_9_while_adding_loses_no_answered_record(tmp_path, rows, format):
    home, folder = tmp_path / "home", tmp_path / "journal"
    out = tmp_path / "answered.txt"
    with open(out, "wb") as sink:
        proc = subprocess.Popen([sys.executable, "-c", WRITER, str(home), str(folder), str(rows), format], stdout=sink)
        try:
            wait_for(lambda: out.stat().st_size > 60_000, timeout=60)  # thousands of records, some batches stored
            os.kill(proc.pid, signal.SIGKILL)
        finally:
            proc.wait(10)
    answered = {
        f"r-{line.split()[0]}:{j}" for line in out.read_text().splitlines() if line.strip() for j in range(rows)
    }
    store = LocalStore(home)
    before = {r["request_id"] for r in read_captures(store, "churn")}
    assert len(before) < len(answered)  # some answered records were only in memory (and the journal) at the kill
    writer = CaptureWriter(store, "churn", flush_interval_s=0.05, journal_dir=folder, format=format)
    assert writer.close(30)
    stored = [r["request_id"] for r in read_captures(store, "churn")]
    lost = answered - set(stored)
    assert not lost, f"{len(lost)} of {len(answered)} answered records lost"
    # at least once: the stored part of the segment a batch started in, and the whole batch when the kill fell
    # between storing it and deleting its segments (documented in kfloop.monitoring.capture): under two batches
    assert len(answered) > 5000 and len(stored) - len(set(stored)) < 2 * 200
    print(f"kill -9: {len(answered)} answered, {len(before)} stored before, {writer.replayed} replayed, 0 lost")
