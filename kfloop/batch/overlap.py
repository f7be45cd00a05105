"""Overlapping a batch job's reading and writing with its prediction, on background threads with bounded
queues (xgboost's prediction and Arrow's readers, writers and compute functions release the GIL).

``prefetch`` reads the items of an iterator ahead on a thread, at most ``depth`` items ahead of the
consumer; ``Drain`` hands items to a function on a thread, at most ``depth`` waiting. Either way an
error on the thread is raised in the caller (``prefetch`` when the item is taken, ``Drain`` by the next
``put`` or by ``close``), and nothing is lost or reordered: items are produced and consumed in order,
one thread each. Memory holds at most ``depth`` items per queue besides the ones being worked on.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

T = TypeVar("T")

_END = object()
_POLL_S = 0.1  # how often a blocked thread looks whether the other side has stopped


def prefetch(items: Iterator[T], depth: int = 1, name: str = "prefetch") -> Iterator[T]:
    """The items of ``items``, in order, read on a background thread up to ``depth`` ahead.

    An exception raised by ``items`` is re-raised here when its position is reached. Closing the
    returned generator early (``break``, an error in the consumer) stops the thread, which closes
    ``items`` itself (so a reader is closed on the thread that used it)."""
    if depth < 1:
        raise ValueError(f"depth={depth}: expected at least 1")
    ready: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def offer(entry) -> bool:
        while not stop.is_set():
            try:
                ready.put(entry, timeout=_POLL_S)
                return True
            except queue.Full:
                continue
        return False

    def produce() -> None:
        try:
            for item in items:
                if not offer((item, None)):
                    return
            offer((_END, None))
        except BaseException as e:  # noqa: BLE001 - handed to the consumer, raised there
            offer((_END, e))
        finally:
            close = getattr(items, "close", None)
            if close is not None:
                close()

    thread = threading.Thread(target=produce, name=name, daemon=True)
    thread.start()
    try:
        while True:
            item, error = ready.get()
            if error is not None:
                raise error
            if item is _END:
                return
            yield item
            del item  # hold no reference while waiting for the next one
    finally:
        stop.set()
        while thread.is_alive():  # unblock a producer waiting for room, then wait for it to close
            try:
                ready.get(timeout=_POLL_S)
            except queue.Empty:
                pass
        thread.join()


class Drain(Generic[T]):
    """Calls ``work(item)`` on a background thread for each ``put`` item, in order, ``depth`` waiting.

    ``put`` blocks while ``depth`` items wait; it raises the error ``work`` raised on an earlier item
    (after which nothing more is worked on). ``close`` waits for every item and raises that error;
    ``abort`` drops the waiting items and waits for the one being worked on, raising nothing."""

    def __init__(self, work: Callable[[T], None], depth: int = 1, name: str = "drain"):
        if depth < 1:
            raise ValueError(f"depth={depth}: expected at least 1")
        self._work = work
        self._queue: queue.Queue = queue.Queue(maxsize=depth)
        self._error: BaseException | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def put(self, item: T) -> None:
        while True:
            self._raise()
            try:
                self._queue.put(item, timeout=_POLL_S)
                return
            except queue.Full:
                continue

    def close(self) -> None:
        self.put(_END)  # type: ignore[arg-type]
        self._thread.join()
        self._raise()

    def abort(self) -> None:
        self._stop.set()
        while self._thread.is_alive():
            try:
                self._queue.get(timeout=_POLL_S)
            except queue.Empty:
                pass
        self._thread.join()

    def _raise(self) -> None:
        if self._error is not None:
            raise self._error

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                item = self._queue.get(timeout=_POLL_S)
            except queue.Empty:
                continue
            if item is _END:
                return
            try:
                self._work(item)
            except BaseException as e:  # noqa: BLE001 - raised in the caller by put/close
                self._error = e
                return
            finally:
                del item
