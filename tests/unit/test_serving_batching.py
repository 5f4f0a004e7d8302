"""The micro-batcher: grouping, ordering, failure isolation, shutdown.

No test reads the wall clock or sleeps. Each runs on an event loop whose clock moves only when the
test advances it (the batcher takes its time and its timeouts from the loop), so `max_wait_ms`
ends exactly when the test says; and a `Gate` holds a batch in the worker thread until the test
releases it, so the test decides what queues meanwhile.
"""

from __future__ import annotations

import asyncio
import contextvars
import threading
from collections.abc import Awaitable, Callable, Iterable
from typing import Any, TypeVar

import pytest

from mlops.serving.batching import QUEUE_BATCHES, BatcherClosed, BatcherFull, MicroBatcher

pytestmark = pytest.mark.unit

T = TypeVar("T")
FOREVER_MS = 3_600_000.0  # an hour: a max_wait the fake clock only reaches when a test advances it there
HANG_GUARD_S = 10.0  # not a timing bound: turns a hang (waiting on a clock that never moves) into a failure


class FakeClockLoop(asyncio.SelectorEventLoop):
    """An event loop whose clock moves only on `advance_to`; threads (the batcher's worker) still wake it.

    `timers` receives the deadline of every timer scheduled on the loop: here, each time the
    batcher starts waiting for more items.
    """

    def __init__(self) -> None:
        super().__init__()
        self.now = 1000.0
        self.timers: asyncio.Queue[float] = asyncio.Queue()

    def time(self) -> float:
        return self.now

    def advance_to(self, when: float) -> None:
        self.now = max(self.now, when)

    def call_at(
        self, when: float, callback: Callable[..., object], *args: Any, context: contextvars.Context | None = None
    ) -> asyncio.TimerHandle:
        self.timers.put_nowait(when)
        return super().call_at(when, callback, *args, context=context)


def run(main: Callable[[FakeClockLoop], Awaitable[T]]) -> T:
    """Run `main(loop)` on a fresh FakeClockLoop."""
    with asyncio.Runner(loop_factory=FakeClockLoop) as runner:
        loop = runner.get_loop()
        assert isinstance(loop, FakeClockLoop)
        return runner.run(_guarded(loop, main(loop)))


async def _guarded(loop: FakeClockLoop, work: Awaitable[T]) -> T:
    task = asyncio.current_task()
    assert task is not None
    watchdog = threading.Timer(HANG_GUARD_S, loop.call_soon_threadsafe, (task.cancel,))
    watchdog.start()
    try:
        return await work
    except asyncio.CancelledError:
        pytest.fail(f"still running after {HANG_GUARD_S:g} s: something waits for a time that never comes")
    finally:
        watchdog.cancel()


async def one_pass() -> None:
    """Let every ready task take one step (each new `submit` queues its item); no time passes."""
    loop = asyncio.get_running_loop()
    stepped = loop.create_future()
    loop.call_soon(stepped.set_result, None)  # after the tasks ready now, as one turn of the loop
    await stepped


def submit_all(batcher: MicroBatcher[int, int], items: Iterable[int]) -> asyncio.Future[list[Any]]:
    """Submit `items` concurrently; results (or exceptions) come back in submission order."""
    return asyncio.gather(*(batcher.submit(i) for i in items), return_exceptions=True)


class Recorder:
    """A `process` function that doubles numbers, refuses negatives and records its batches."""

    def __init__(self) -> None:
        self.batches: list[list[int]] = []
        self.threads: set[str] = set()

    def __call__(self, items: list[int]) -> list[int]:
        self.batches.append(list(items))
        self.threads.add(threading.current_thread().name)
        if any(i < 0 for i in items):
            raise ValueError(f"negative item in {items}")
        return [2 * i for i in items]


class Gate(Recorder):
    """A Recorder that holds each batch in the worker thread until the test calls `release`."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        super().__init__()
        self._loop = loop
        self.started: asyncio.Queue[list[int]] = asyncio.Queue()  # each batch, when it reaches `process`
        self._releases = threading.Semaphore(0)

    def __call__(self, items: list[int]) -> list[int]:
        self._loop.call_soon_threadsafe(self.started.put_nowait, list(items))
        if not self._releases.acquire(timeout=HANG_GUARD_S):
            raise TimeoutError("the test never released this batch")
        return super().__call__(items)

    def release(self, batches: int = 1) -> None:
        for _ in range(batches):
            self._releases.release()


def test_concurrent_submits_wait_together_and_are_answered_in_order() -> None:
    recorder = Recorder()

    async def main(loop: FakeClockLoop) -> list[Any]:
        async with MicroBatcher(recorder, max_batch_size=64, max_wait_ms=20) as batcher:
            calls = submit_all(batcher, range(10))
            deadline = await loop.timers.get()  # all ten collected, waiting for more
            assert recorder.batches == []
            loop.advance_to(deadline)
            return await calls

    assert run(main) == [2 * i for i in range(10)]
    assert recorder.batches == [list(range(10))]
    assert len(recorder.threads) == 1 and threading.current_thread().name not in recorder.threads


def test_full_batches_go_at_once_and_never_exceed_max_batch_size() -> None:
    recorder = Recorder()

    async def main(loop: FakeClockLoop) -> list[Any]:
        async with MicroBatcher(recorder, max_batch_size=4, max_wait_ms=FOREVER_MS) as batcher:
            calls = submit_all(batcher, range(10))
            deadline = await loop.timers.get()  # only the last, partial batch waits
            assert recorder.batches == [[0, 1, 2, 3], [4, 5, 6, 7]]
            loop.advance_to(deadline)
            return await calls

    assert run(main) == [2 * i for i in range(10)]
    assert recorder.batches == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]


def test_a_lone_request_waits_max_wait_from_its_arrival_then_goes_alone() -> None:
    recorder = Recorder()

    async def main(loop: FakeClockLoop) -> int:
        async with MicroBatcher(recorder, max_batch_size=64, max_wait_ms=30) as batcher:
            arrived = loop.time()
            lone = asyncio.ensure_future(batcher.submit(1))
            deadline = await loop.timers.get()
            assert deadline == pytest.approx(arrived + 0.030)
            assert recorder.batches == []
            loop.advance_to(deadline)
            return await lone

    assert run(main) == 2
    assert recorder.batches == [[1]]


def test_requests_arriving_during_the_wait_join_the_batch_without_extending_it() -> None:
    recorder = Recorder()

    async def main(loop: FakeClockLoop) -> list[int]:
        async with MicroBatcher(recorder, max_batch_size=64, max_wait_ms=30) as batcher:
            first = asyncio.ensure_future(batcher.submit(1))
            deadline = await loop.timers.get()
            loop.advance_to(deadline - 0.010)
            second = asyncio.ensure_future(batcher.submit(2))
            assert await loop.timers.get() == pytest.approx(deadline)  # waits on, until the first item's deadline
            loop.advance_to(deadline)
            return [await first, await second]

    assert run(main) == [2, 4]
    assert recorder.batches == [[1, 2]]


def test_requests_arriving_during_a_predict_form_the_next_batch() -> None:
    async def main(loop: FakeClockLoop) -> tuple[list[Any], list[list[int]]]:
        gate = Gate(loop)
        async with MicroBatcher(gate, max_batch_size=64, max_wait_ms=0) as batcher:
            first = asyncio.ensure_future(batcher.submit(1))
            assert await gate.started.get() == [1]  # held in the worker thread
            rest = submit_all(batcher, [2, 3, 4])
            await one_pass()  # 2, 3 and 4 are queued
            gate.release(2)
            return [await first, *await rest], gate.batches

    results, batches = run(main)
    assert results == [2, 4, 6, 8]
    assert batches == [[1], [2, 3, 4]]


def test_a_failing_item_fails_only_its_own_caller() -> None:
    recorder = Recorder()

    async def main(loop: FakeClockLoop) -> list[Any]:
        async with MicroBatcher(recorder, max_batch_size=3, max_wait_ms=FOREVER_MS) as batcher:
            return await submit_all(batcher, [1, -1, 2])

    results = run(main)
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

    async def main(loop: FakeClockLoop) -> tuple[list[Any], list[Any]]:
        async with MicroBatcher(flaky, max_batch_size=2, max_wait_ms=FOREVER_MS) as batcher:
            failed = await submit_all(batcher, [1, 2])
            return failed, await submit_all(batcher, [3, 4])

    failed, later = run(main)
    assert all(isinstance(r, RuntimeError) for r in failed)
    assert later == [3, 4]


@pytest.mark.parametrize(
    ("process", "expected"),
    [
        (lambda items: items[:1], [1, 2]),  # one result for two items: right for each item alone
        (lambda items: [], [RuntimeError, RuntimeError]),
    ],
)
def test_a_wrong_number_of_results_is_an_error_not_a_mismatch(
    process: Callable[[list[int]], list[int]], expected: list[Any]
) -> None:
    async def main(loop: FakeClockLoop) -> list[Any]:
        async with MicroBatcher(process, max_batch_size=2, max_wait_ms=FOREVER_MS) as batcher:
            return await submit_all(batcher, [1, 2])

    results = run(main)
    assert [type(r) if isinstance(r, BaseException) else r for r in results] == expected


def test_processing_does_not_block_the_event_loop() -> None:
    async def other_work() -> str:
        return "done"

    async def main(loop: FakeClockLoop) -> tuple[int, set[str]]:
        gate = Gate(loop)
        async with MicroBatcher(gate, max_batch_size=8, max_wait_ms=0) as batcher:
            held = asyncio.ensure_future(batcher.submit(1))
            await gate.started.get()  # `process` is blocked in the worker thread from here on...
            assert await asyncio.ensure_future(other_work()) == "done"  # ...and the loop runs other tasks
            assert not held.done()
            gate.release()
            return await held, gate.threads

    result, threads = run(main)
    assert result == 2
    assert len(threads) == 1 and threading.current_thread().name not in threads


def test_a_caller_cancelled_during_its_predict_does_not_break_the_batcher() -> None:
    async def main(loop: FakeClockLoop) -> tuple[int, bool, list[list[int]]]:
        gate = Gate(loop)
        async with MicroBatcher(gate, max_batch_size=8, max_wait_ms=0) as batcher:
            doomed = asyncio.ensure_future(batcher.submit(1))
            await gate.started.get()
            doomed.cancel()
            gate.release(2)
            later = await batcher.submit(2)
            return later, doomed.cancelled(), gate.batches

    assert run(main) == (4, True, [[1], [2]])


def test_a_caller_cancelled_while_queued_is_skipped() -> None:
    async def main(loop: FakeClockLoop) -> tuple[list[int], list[list[int]]]:
        gate = Gate(loop)
        async with MicroBatcher(gate, max_batch_size=8, max_wait_ms=0) as batcher:
            first = asyncio.ensure_future(batcher.submit(0))
            await gate.started.get()
            doomed = asyncio.ensure_future(batcher.submit(1))
            kept = asyncio.ensure_future(batcher.submit(2))
            await one_pass()  # 1 and 2 are queued
            doomed.cancel()
            gate.release(2)
            return [await first, await kept], gate.batches

    results, batches = run(main)
    assert results == [0, 4]
    assert batches == [[0], [2]]  # the cancelled caller's item never reached `process`


def test_stop_fails_waiting_callers_and_refuses_new_ones() -> None:
    async def main(loop: FakeClockLoop) -> tuple[list[Any], bool]:
        gate = Gate(loop)
        batcher = MicroBatcher(gate, max_batch_size=1, max_wait_ms=0)
        batcher.start()
        pending = submit_all(batcher, [1, 2, 3])
        assert await gate.started.get() == [1]  # 1 is being processed, 2 and 3 are queued
        await batcher.stop()
        gate.release()  # lets the worker thread finish
        with pytest.raises(BatcherClosed):
            await batcher.submit(4)
        return await pending, batcher.running

    results, running = run(main)
    assert all(isinstance(r, BatcherClosed) for r in results)
    assert not running


def test_stop_while_collecting_fails_the_collected_callers() -> None:
    async def main(loop: FakeClockLoop) -> list[Any]:
        batcher = MicroBatcher(Recorder(), max_batch_size=64, max_wait_ms=FOREVER_MS)
        batcher.start()
        pending = submit_all(batcher, [1, 2])
        await loop.timers.get()  # both collected, the batcher is waiting for more
        await batcher.stop()
        return await pending

    assert all(isinstance(r, BatcherClosed) for r in run(main))


def test_a_full_queue_refuses_at_once_and_takes_items_again_once_drained() -> None:
    async def main(loop: FakeClockLoop) -> tuple[list[Any], int, list[list[int]]]:
        gate = Gate(loop)
        async with MicroBatcher(gate, max_batch_size=1, max_wait_ms=0, max_queue=2) as batcher:
            first = asyncio.ensure_future(batcher.submit(1))
            assert await gate.started.get() == [1]  # held in the worker thread; the queue is empty
            queued = submit_all(batcher, [2, 3])
            await one_pass()  # 2 and 3 fill the queue
            with pytest.raises(BatcherFull, match="2 requests"):
                await batcher.submit(4)  # refused without waiting
            gate.release(3)
            answered = [await first, *await queued]
            gate.release()
            return answered, await batcher.submit(5), gate.batches

    answered, later, batches = run(main)
    assert answered == [2, 4, 6] and later == 10
    assert batches == [[1], [2], [3], [5]]  # the refused item never reached `process`


def test_the_batch_being_collected_does_not_count_against_the_queue() -> None:
    recorder = Recorder()

    async def main(loop: FakeClockLoop) -> list[Any]:
        async with MicroBatcher(recorder, max_batch_size=4, max_wait_ms=FOREVER_MS, max_queue=1) as batcher:
            calls = []
            for i in range(3):  # one at a time: each is taken into the batch before the next arrives
                calls.append(asyncio.ensure_future(batcher.submit(i)))
                deadline = await loop.timers.get()  # the batcher took item i and waits for more
            loop.advance_to(deadline)
            return await asyncio.gather(*calls)

    assert run(main) == [0, 2, 4]
    assert recorder.batches == [[0, 1, 2]]


def test_the_queue_defaults_to_a_few_batches() -> None:
    assert MicroBatcher(Recorder(), max_batch_size=4, max_wait_ms=0).max_queue == QUEUE_BATCHES * 4


@pytest.mark.parametrize(("size", "wait"), [(0, 1.0), (1, -1.0)])
def test_settings_are_checked(size: int, wait: float) -> None:
    with pytest.raises(ValueError):
        MicroBatcher(Recorder(), max_batch_size=size, max_wait_ms=wait)


def test_max_queue_is_checked() -> None:
    with pytest.raises(ValueError, match="max_queue"):
        MicroBatcher(Recorder(), max_batch_size=1, max_wait_ms=0, max_queue=0)


def test_in_loop_processes_on_the_event_loop_thread_and_still_isolates_a_poison_item() -> None:
    recorder = Recorder()
    initialized: list[str] = []

    async def main(loop: FakeClockLoop) -> tuple[list[Any], list[Any]]:
        async with MicroBatcher(
            recorder,
            max_batch_size=3,
            max_wait_ms=FOREVER_MS,
            in_loop=True,
            thread_initializer=lambda: initialized.append(threading.current_thread().name),
        ) as batcher:
            first = await submit_all(batcher, [1, -1, 2])
            return first, await submit_all(batcher, [3, 4, 5])

    first, later = run(main)
    assert first[0] == 2 and first[2] == 4 and isinstance(first[1], ValueError)
    assert later == [6, 8, 10]
    assert recorder.batches == [[1, -1, 2], [1], [-1], [2], [3, 4, 5]]
    assert recorder.threads == {threading.current_thread().name} == set(initialized)


def test_in_loop_answers_a_batch_before_collecting_the_next() -> None:
    callers: list[asyncio.Future[int]] = []
    answered_before: list[list[bool]] = []  # for each batch: which callers had their answer when it started

    def process(items: list[int]) -> list[int]:
        answered_before.append([caller.done() for caller in callers])
        return [2 * i for i in items]

    async def main(loop: FakeClockLoop) -> list[int]:
        async with MicroBatcher(process, max_batch_size=2, max_wait_ms=FOREVER_MS, in_loop=True) as batcher:
            callers.extend(asyncio.ensure_future(batcher.submit(i)) for i in range(4))
            return list(await asyncio.gather(*callers))

    assert run(main) == [0, 2, 4, 6]
    assert answered_before == [[False] * 4, [True, True, False, False]]
