"""The micro-batcher: grouping, ordering, failure isolation, shutdown."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Sequence

import pytest

from mlops.serving.batching import BatcherClosed, MicroBatcher

pytestmark = pytest.mark.unit


class Recorder:
    """A `process` function that doubles numbers, refuses negatives and records its batches."""

    def __init__(self, delay_s: float = 0.0) -> None:
        self.batches: list[list[int]] = []
        self.threads: set[str] = set()
        self.delay_s = delay_s

    def __call__(self, items: list[int]) -> list[int]:
        self.batches.append(list(items))
        self.threads.add(threading.current_thread().name)
        time.sleep(self.delay_s)  # blocking on purpose: it must not block the event loop
        if any(i < 0 for i in items):
            raise ValueError(f"negative item in {items}")
        return [2 * i for i in items]


async def gather(batcher: MicroBatcher[int, int], items: Sequence[int]) -> list[int | BaseException]:
    return await asyncio.gather(*(batcher.submit(i) for i in items), return_exceptions=True)


def run(
    process: Callable[[list[int]], Sequence[int]], items: Sequence[int], **kwargs: float
) -> list[int | BaseException]:
    async def main() -> list[int | BaseException]:
        settings = {"max_batch_size": 64, "max_wait_ms": 20.0, **kwargs}
        async with MicroBatcher(process, **settings) as batcher:  # type: ignore[arg-type]
            return await gather(batcher, items)

    return asyncio.run(main())


def test_concurrent_submits_are_grouped_and_answered_in_order() -> None:
    recorder = Recorder()
    assert run(recorder, range(10)) == [2 * i for i in range(10)]
    assert recorder.batches == [list(range(10))]
    assert len(recorder.threads) == 1 and threading.current_thread().name not in recorder.threads


def test_batches_never_exceed_max_batch_size() -> None:
    recorder = Recorder()
    assert run(recorder, range(10), max_batch_size=4) == [2 * i for i in range(10)]
    assert recorder.batches == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]


def test_a_lone_request_waits_at_most_max_wait() -> None:
    async def main() -> float:
        async with MicroBatcher(Recorder(), max_batch_size=64, max_wait_ms=30) as batcher:
            start = time.perf_counter()
            assert await batcher.submit(1) == 2
            return time.perf_counter() - start

    assert 0.025 <= asyncio.run(main()) < 0.5


def test_requests_arriving_during_a_predict_form_the_next_batch() -> None:
    recorder = Recorder(delay_s=0.05)

    async def main() -> list[int | BaseException]:
        async with MicroBatcher(recorder, max_batch_size=64, max_wait_ms=0) as batcher:
            first = asyncio.ensure_future(batcher.submit(1))
            await asyncio.sleep(0.01)  # the first batch is now being processed
            rest = await gather(batcher, [2, 3, 4])
            return [await first, *rest]

    assert asyncio.run(main()) == [2, 4, 6, 8]
    assert recorder.batches == [[1], [2, 3, 4]]


def test_a_failing_item_fails_only_its_own_caller() -> None:
    recorder = Recorder()
    results = run(recorder, [1, -1, 2])
    assert results[0] == 2 and results[2] == 4
    assert isinstance(results[1], ValueError)
    assert recorder.batches == [[1, -1, 2], [1], [-1], [2]]  # the batch, then each item alone


def test_a_failing_predict_fails_its_batch_and_the_batcher_goes_on() -> None:
    calls = {"n": 0}

    def flaky(items: list[int]) -> list[int]:
        calls["n"] += 1
        if calls["n"] <= 3:  # the batch of two, then each item on its own
            raise RuntimeError("model exploded")
        return items

    async def main() -> tuple[list[int | BaseException], int]:
        async with MicroBatcher(flaky, max_batch_size=64, max_wait_ms=5) as batcher:
            failed = await gather(batcher, [1, 2])
            return failed, await batcher.submit(3)

    failed, later = asyncio.run(main())
    assert all(isinstance(r, RuntimeError) for r in failed)
    assert later == 3


def test_a_wrong_number_of_results_is_an_error_not_a_mismatch() -> None:
    assert run(lambda items: items[:1], [1, 2]) == [1, 2]  # short for two, right for each alone
    assert all(isinstance(r, RuntimeError) for r in run(lambda items: [], [1, 2]))


def test_processing_does_not_block_the_event_loop() -> None:
    async def main() -> int:
        ticks = 0

        async def ticker() -> None:
            nonlocal ticks
            while True:
                ticks += 1
                await asyncio.sleep(0.005)

        async with MicroBatcher(Recorder(delay_s=0.2), max_batch_size=8, max_wait_ms=0) as batcher:
            task = asyncio.ensure_future(ticker())
            await batcher.submit(1)
            task.cancel()
        return ticks

    assert asyncio.run(main()) >= 10


def test_a_cancelled_caller_does_not_break_the_batcher() -> None:
    async def main() -> int:
        async with MicroBatcher(Recorder(delay_s=0.05), max_batch_size=8, max_wait_ms=0) as batcher:
            doomed = asyncio.ensure_future(batcher.submit(1))
            await asyncio.sleep(0.01)
            doomed.cancel()
            return await batcher.submit(2)

    assert asyncio.run(main()) == 4


def test_stop_fails_waiting_callers_and_refuses_new_ones() -> None:
    async def main() -> tuple[list[int | BaseException], bool]:
        batcher = MicroBatcher(Recorder(delay_s=0.1), max_batch_size=1, max_wait_ms=0)
        batcher.start()
        pending = asyncio.ensure_future(gather(batcher, [1, 2, 3]))
        await asyncio.sleep(0.02)
        await batcher.stop()
        with pytest.raises(BatcherClosed):
            await batcher.submit(4)
        return await pending, batcher.running

    results, running = asyncio.run(main())
    assert all(isinstance(r, BatcherClosed) for r in results)
    assert not running


@pytest.mark.parametrize(("size", "wait"), [(0, 1.0), (1, -1.0)])
def test_settings_are_checked(size: int, wait: float) -> None:
    with pytest.raises(ValueError):
        MicroBatcher(Recorder(), max_batch_size=size, max_wait_ms=wait)


def test_stop_while_collecting_fails_the_collected_callers() -> None:
    async def main() -> list[int | BaseException]:
        batcher = MicroBatcher(Recorder(), max_batch_size=64, max_wait_ms=10_000)
        batcher.start()
        pending = asyncio.ensure_future(gather(batcher, [1, 2]))
        await asyncio.sleep(0.02)  # both collected, the batcher is waiting for more
        await batcher.stop()
        return await asyncio.wait_for(pending, 1)

    assert all(isinstance(r, BatcherClosed) for r in asyncio.run(main()))
