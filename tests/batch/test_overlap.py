"""Reading ahead and writing behind on threads: order kept, errors raised in the caller, threads stopped."""

from __future__ import annotations

import threading
import time

import pytest

from kfloop.batch.overlap import Drain, prefetch


def test_prefetch_yields_every_item_in_order_and_reads_at_most_depth_ahead():
    produced: list[int] = []

    def items():
        for i in range(50):
            produced.append(i)
            yield i

    taken = []
    for item in prefetch(items(), depth=2):
        time.sleep(0.001 if item % 10 else 0.05)  # let the reader run ahead
        # the reader is at most: the queued items (2), plus one it holds waiting for room
        assert len(produced) - (item + 1) <= 3
        taken.append(item)
    assert taken == list(range(50))


def test_prefetch_raises_the_readers_error_at_its_position():
    def items():
        yield 1
        yield 2
        raise ValueError("line 3 is malformed")

    seen = []
    with pytest.raises(ValueError, match="line 3 is malformed"):
        for item in prefetch(items()):
            seen.append(item)
    assert seen == [1, 2]


def test_leaving_prefetch_early_stops_the_reader_and_closes_its_iterator():
    closed = threading.Event()

    def items():
        try:
            i = 0
            while True:
                yield i
                i += 1
        finally:
            closed.set()

    before = threading.active_count()
    for item in prefetch(items(), depth=1, name="test-prefetch"):
        if item == 3:
            break
    assert closed.is_set() and threading.active_count() == before
    assert not [t for t in threading.enumerate() if t.name == "test-prefetch"]


def test_drain_works_every_item_in_order_on_one_thread():
    done: list[tuple[int, str]] = []
    drain = Drain(lambda i: done.append((i, threading.current_thread().name)), depth=2, name="test-drain")
    for i in range(100):
        drain.put(i)
    drain.close()
    assert [i for i, _ in done] == list(range(100)) and {name for _, name in done} == {"test-drain"}


def test_a_drain_error_is_raised_by_the_next_put_or_by_close_and_stops_the_work():
    done: list[int] = []

    def work(i):
        if i == 2:
            raise OSError("disk full")
        done.append(i)

    drain = Drain(work, depth=1)
    with pytest.raises(OSError, match="disk full"):
        for i in range(1000):
            drain.put(i)
    assert done == [0, 1]
    drain = Drain(work, depth=5)
    for i in range(3):
        drain.put(i)
    with pytest.raises(OSError, match="disk full"):
        drain.close()


def test_drain_abort_drops_waiting_items_and_returns_when_the_thread_has_stopped():
    release, started = threading.Event(), threading.Event()
    done: list[int] = []

    def work(i):
        started.set()
        release.wait(5)
        done.append(i)

    drain = Drain(work, depth=3, name="test-abort")
    drain.put(0)
    assert started.wait(5)
    for i in range(1, 4):  # one being worked on, three waiting
        drain.put(i)
    threading.Timer(0.05, release.set).start()
    drain.abort()
    assert done == [0] and not [t for t in threading.enumerate() if t.name == "test-abort"]


def test_depth_must_be_positive():
    with pytest.raises(ValueError, match="depth=0"):
        Drain(print, depth=0)
    with pytest.raises(ValueError, match="depth=0"):
        next(prefetch(iter([1]), depth=0))
