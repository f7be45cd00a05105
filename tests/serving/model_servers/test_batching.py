"""MicroBatcher: concurrent callers share calls, and each gets back exactly its own rows."""

from __future__ import annotations

import asyncio
import threading
import time

import numpy as np
import pytest

from kfloop.serving.model_servers.batching import MicroBatcher


class RecordingFn:
    """Row sums, slowly enough for callers to queue; records each call's row count and thread."""

    def __init__(self, delay: float = 0.01, fail_on: float | None = None):
        self.delay, self.fail_on = delay, fail_on
        self.calls: list[int] = []
        self.threads: set[str] = set()

    def __call__(self, X: np.ndarray) -> np.ndarray:
        self.calls.append(len(X))
        self.threads.add(threading.current_thread().name)
        time.sleep(self.delay)
        if self.fail_on is not None and (X == self.fail_on).any():
            raise ValueError("bad row")
        return X.sum(axis=1)


def matrices(count: int) -> list[np.ndarray]:
    return [np.full((1 + i % 3, 2), float(i), np.float32) for i in range(count)]


async def run_all(batcher: MicroBatcher, inputs: list[np.ndarray]) -> list:
    return await asyncio.gather(*(batcher.run(X) for X in inputs), return_exceptions=True)


def test_concurrent_callers_share_calls_and_get_their_own_rows():
    fn, inputs = RecordingFn(), matrices(30)
    batcher = MicroBatcher(fn, max_rows=1000)
    results = asyncio.run(run_all(batcher, inputs))
    for X, result in zip(inputs, results):
        np.testing.assert_array_equal(result, X.sum(axis=1))
    assert len(fn.calls) < len(inputs) and sum(fn.calls) == sum(len(X) for X in inputs)
    assert fn.threads != {threading.current_thread().name}  # off the event loop's thread
    batcher.close()


def test_batches_stay_within_max_rows():
    fn, inputs = RecordingFn(), matrices(30)
    batcher = MicroBatcher(fn, max_rows=5)
    asyncio.run(run_all(batcher, inputs))
    assert max(fn.calls) <= 5 and sum(fn.calls) == sum(len(X) for X in inputs)
    batcher.close()


def test_an_error_reaches_the_callers_of_its_batch_and_the_batcher_recovers():
    fn = RecordingFn(fail_on=3.0)
    batcher = MicroBatcher(fn, max_rows=1000)
    results = asyncio.run(run_all(batcher, matrices(8)))
    assert any(isinstance(r, ValueError) for r in results)
    fn.fail_on = None
    [after] = asyncio.run(run_all(batcher, [np.ones((2, 2), np.float32)]))
    np.testing.assert_array_equal(after, [2.0, 2.0])
    batcher.close()


def test_a_cancelled_caller_does_not_disturb_the_others():
    batcher = MicroBatcher(RecordingFn(delay=0.05), max_rows=1000)

    async def scenario():
        first = asyncio.ensure_future(batcher.run(np.ones((1, 2), np.float32)))
        await asyncio.sleep(0.01)  # the first call is running; the next two queue
        doomed = asyncio.ensure_future(batcher.run(np.full((1, 2), 5.0, np.float32)))
        kept = asyncio.ensure_future(batcher.run(np.full((2, 2), 7.0, np.float32)))
        await asyncio.sleep(0)
        doomed.cancel()
        return await first, await kept, doomed

    first, kept, doomed = asyncio.run(scenario())
    np.testing.assert_array_equal(first, [2.0])
    np.testing.assert_array_equal(kept, [14.0, 14.0])
    assert doomed.cancelled()
    batcher.close()


@pytest.mark.parametrize(
    "fn", [lambda X: X[:, 0], lambda X: np.repeat(X[:, :1], 4, axis=1)], ids=["values", "probabilities"]
)
def test_results_of_any_trailing_shape_are_split_by_rows(fn):
    batcher, inputs = MicroBatcher(fn), matrices(6)
    for X, result in zip(inputs, asyncio.run(run_all(batcher, inputs))):
        np.testing.assert_array_equal(result, fn(X))
    batcher.close()


def test_a_lone_small_request_is_predicted_on_the_loop_and_a_burst_still_shares_calls():
    fn = RecordingFn(delay=0.0)
    batcher = MicroBatcher(fn, max_rows=1000, inline_rows=4)
    loop_thread = threading.current_thread().name

    async def scenario():
        alone = await batcher.run(np.ones((2, 2), np.float32))
        large = await batcher.run(np.ones((5, 2), np.float32))  # over inline_rows: the thread
        burst = await run_all(batcher, matrices(12))  # read together: they queue, then share calls
        return alone, large, burst

    alone, large, burst = asyncio.run(scenario())
    np.testing.assert_array_equal(alone, [2.0, 2.0])
    np.testing.assert_array_equal(large, [2.0] * 5)
    for X, result in zip(matrices(12), burst):
        np.testing.assert_array_equal(result, X.sum(axis=1))
    assert batcher.inline_calls == 1
    assert fn.calls[:2] == [2, 5] and len(fn.calls) < 2 + 12
    assert loop_thread in fn.threads and len(fn.threads) == 2
    batcher.close()


def test_a_lone_caller_cancelled_before_its_inline_call_leaves_nothing_queued():
    fn = RecordingFn(delay=0.0)
    batcher = MicroBatcher(fn, inline_rows=4)

    async def scenario():
        task = asyncio.ensure_future(batcher.run(np.ones((1, 2), np.float32)))
        await asyncio.sleep(0)  # the call waits for its turn of the loop
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        return task, await batcher.run(np.full((1, 2), 3.0, np.float32))

    task, after = asyncio.run(scenario())
    assert task.cancelled() and fn.calls == [1]
    np.testing.assert_array_equal(after, [6.0])
    assert batcher.inline_calls == 1
    batcher.close()
