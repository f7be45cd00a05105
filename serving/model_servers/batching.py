"""Micro-batching: the rows of concurrent requests predicted in one call.

XGBoost's ``inplace_predict`` costs a fixed ~0.3 ms per call plus a few microseconds per row, so
sixteen one-row requests answered in one call cost little more than one. ``MicroBatcher`` runs
one call at a time in its own thread; requests that arrive while a call runs wait, and the next
call takes all of them (up to ``max_rows`` rows). Nothing waits for a batch to fill: a request
that finds the batcher idle runs at once, so a lone client sees no added latency.

A request of at most ``inline_rows`` rows that is still alone after one turn of the event loop (the
requests read with it have queued by then) is predicted on the loop's own thread: handing one row to
the thread and back costs two thread wake-ups, ~25% of a one-row request's CPU at one request at a
time (``benchmarks/serving.py``); requests that arrive together still share a call in the thread.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
from collections.abc import Callable

import numpy as np

RowFunction = Callable[[np.ndarray], np.ndarray]
DEFAULT_INLINE_ROWS = 100  # ~0.4 ms of XGBoost for the predictor's models: the loop waits no longer


class MicroBatcher:
    """Coalesces concurrent ``run(X)`` calls into calls of ``fn`` on the concatenated rows.

    ``fn`` maps an ``[n, d]`` matrix to ``n`` rows of results (any trailing shape); each caller
    gets back the rows of its own matrix.
    """

    def __init__(self, fn: RowFunction, max_rows: int = 10_000, inline_rows: int = DEFAULT_INLINE_ROWS):
        self.fn, self.max_rows, self.inline_rows = fn, max_rows, inline_rows
        self._pending: list[tuple[np.ndarray, asyncio.Future]] = []
        self._draining = False
        self.inline_calls = 0  # calls made on the event loop's thread (a lone request)
        self._executor = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="predict")

    async def run(self, X: np.ndarray) -> np.ndarray:
        """``fn(X)``, computed together with the requests queued at the same time."""
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        entry = (X, future)
        self._pending.append(entry)
        if not self._draining and len(X) <= self.inline_rows:
            try:
                await asyncio.sleep(0)  # the requests read with this one reach the queue meanwhile
            except asyncio.CancelledError:
                self._pending.remove(entry)
                raise
            if not self._draining and len(self._pending) == 1 and self._pending[0] is entry:
                self._pending.clear()
                self.inline_calls += 1
                return self.fn(X)
        if not self._draining:
            self._draining = True
            loop.create_task(self._drain())
        return await future

    def close(self) -> None:
        self._executor.shutdown(wait=False)

    async def _drain(self) -> None:
        try:
            while self._pending:
                await self._run_batch(self._take())
        finally:
            self._draining = False

    def _take(self) -> list[tuple[np.ndarray, asyncio.Future]]:
        """The oldest queued requests, at least one, up to ``max_rows`` rows in all."""
        rows, count = 0, 0
        for X, _ in self._pending:
            if count and rows + len(X) > self.max_rows:
                break
            rows, count = rows + len(X), count + 1
        batch, self._pending = self._pending[:count], self._pending[count:]
        return batch

    async def _run_batch(self, batch: list[tuple[np.ndarray, asyncio.Future]]) -> None:
        X = batch[0][0] if len(batch) == 1 else np.concatenate([x for x, _ in batch])
        try:
            out = await asyncio.get_running_loop().run_in_executor(self._executor, self.fn, X)
        except Exception as e:  # noqa: BLE001 - every caller of the batch gets the error
            for _, future in batch:
                if not future.done():
                    future.set_exception(e)
            return
        start = 0
        for x, future in batch:
            if not future.done():  # a caller that went away has a cancelled future
                future.set_result(out[start : start + len(x)])
            start += len(x)
