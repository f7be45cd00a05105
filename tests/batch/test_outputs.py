"""A batch job's outputs: the capture spool commits every object, several at a time, or none."""

from __future__ import annotations

import threading

import pytest

from kfloop.batch.outputs import COMMIT_THREADS, Spool
from kfloop.store.objects import LocalStore


class _FailingStore(LocalStore):
    """A real local store whose ``fail_at``-th put fails (a full disk, say), counting puts under way at once."""

    def __init__(self, root, fail_at: int | None = None):
        super().__init__(root)
        self.fail_at, self.puts, self.at_once, self.most_at_once = fail_at, 0, 0, 0
        self._lock = threading.Lock()
        self._gate = threading.Barrier(2, timeout=5)

    def put(self, key: str, data: bytes) -> None:
        with self._lock:
            self.puts += 1
            n, self.at_once = self.puts, self.at_once + 1
            self.most_at_once = max(self.most_at_once, self.at_once)
        try:
            if n <= 2:  # the first two puts wait for each other: they run side by side or the barrier times out
                self._gate.wait()
            if n == self.fail_at:
                raise OSError("no space left on device")
            super().put(key, data)
        finally:
            with self._lock:
                self.at_once -= 1


def _spool(store, n: int) -> Spool:
    spool = Spool(store)
    for i in range(n):
        spool.add(f"captures/m/1/2026-01-01/{i:03d}.parquet", f"object {i}".encode())
    return spool


def test_the_spool_commits_every_object_several_at_a_time_and_removes_its_folder(tmp_path):
    store = _FailingStore(tmp_path / "store")
    spool = _spool(store, 12)
    spool.commit()
    assert store.list("captures/") == sorted(spool.keys)
    assert [store.get(k) for k in spool.keys] == [f"object {i}".encode() for i in range(12)]
    assert 2 <= store.most_at_once <= COMMIT_THREADS
    assert not spool.dir.exists()


def test_a_failed_put_leaves_no_object_of_the_spool_in_the_store(tmp_path):
    store = _FailingStore(tmp_path / "store", fail_at=5)
    spool = _spool(store, 12)
    with pytest.raises(OSError, match="no space left"):
        spool.commit()
    assert store.list("captures/") == []
    assert spool.committed == []
    assert not spool.dir.exists()
