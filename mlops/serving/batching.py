"""Adaptive micro-batching: concurrent requests share one model call.

One batcher coroutine takes the first queued item, then keeps collecting until it holds
`max_batch_size` items or `max_wait_ms` have passed since the first one, and hands the
batch to `process` in a worker thread, so the event loop keeps accepting requests (or, for a
`process` of microseconds, runs it on the loop itself). While a batch is being processed the
next one queues up, so batches grow with the load on their own (the "adaptive" part) and a lone
request waits at most `max_wait_ms`.

The queue is bounded: at most `max_queue` items wait for a batch (besides the batch being
collected or processed), and `submit` raises BatcherFull at once past that, so an overload is
refused straight away instead of piling up callers, and their memory, without limit.

This module knows nothing about models or HTTP: `process` maps a list of items to a list of
results of the same length, in the same order.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Generic, TypeVar

T = TypeVar("T")
R = TypeVar("R")

QUEUE_BATCHES = 16  # the default queue holds this many full batches


class BatcherFull(RuntimeError):
    """The queue already holds `max_queue` items: the caller should retry later."""


class BatcherClosed(RuntimeError):
    """The batcher was stopped before (or while) an item was processed."""


class MicroBatcher(Generic[T, R]):
    """Groups concurrent `submit` calls into batches for one `process` call in a thread.

    If `process` raises on a batch of several items, each item is retried on its own, so a
    poison item fails only its own caller. `thread_initializer` runs once in the processing
    thread. `max_queue` bounds the items waiting for a batch (default: QUEUE_BATCHES ×
    `max_batch_size`). With `in_loop`, `process` runs on the event loop itself (and
    `thread_initializer` there at start): for a `process` that holds the GIL nearly all the time
    and takes tens of microseconds, the thread hand-off costs more than the overlap it buys.
    Use as `async with MicroBatcher(...) as batcher:`.
    """

    def __init__(
        self,
        process: Callable[[list[T]], Sequence[R]],
        *,
        max_batch_size: int,
        max_wait_ms: float,
        max_queue: int | None = None,
        thread_initializer: Callable[[], object] | None = None,
        in_loop: bool = False,
    ) -> None:
        if max_batch_size < 1:
            raise ValueError("max_batch_size must be at least 1")
        if max_wait_ms < 0:
            raise ValueError("max_wait_ms must not be negative")
        if max_queue is not None and max_queue < 1:
            raise ValueError("max_queue must be at least 1")
        self._process = process
        self._thread_initializer = thread_initializer
        self.in_loop = in_loop
        self.max_batch_size = max_batch_size
        self.max_wait_s = max_wait_ms / 1000.0
        self.max_queue = QUEUE_BATCHES * max_batch_size if max_queue is None else max_queue
        self._queue: asyncio.Queue[tuple[T, asyncio.Future[R]]] = asyncio.Queue(maxsize=self.max_queue)
        self._executor: ThreadPoolExecutor | None = None
        self._task: asyncio.Task[None] | None = None

    @property
    def running(self) -> bool:
        """True while the batcher coroutine is alive."""
        return self._task is not None and not self._task.done()

    async def __aenter__(self) -> MicroBatcher[T, R]:
        self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    def start(self) -> None:
        """Start the batcher coroutine on the running event loop."""
        if self.running:
            return
        if self.in_loop:
            if self._thread_initializer is not None:
                self._thread_initializer()
        else:  # one thread: model calls run one at a time; the model may use several cores itself
            self._executor = ThreadPoolExecutor(
                max_workers=1, thread_name_prefix="predict", initializer=self._thread_initializer
            )
        self._task = asyncio.get_running_loop().create_task(self._run(), name="micro-batcher")

    async def stop(self) -> None:
        """Stop collecting, fail whatever is still queued with BatcherClosed."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        while not self._queue.empty():
            self._fail([self._queue.get_nowait()], BatcherClosed("the service is shutting down"))
        if self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)
            self._executor = None

    async def submit(self, item: T) -> R:
        """Queue one item and wait for its result (or its own exception); BatcherFull if the queue is full."""
        if not self.running:
            raise BatcherClosed("the batcher is not running")
        future: asyncio.Future[R] = asyncio.get_running_loop().create_future()
        try:
            self._queue.put_nowait((item, future))
        except asyncio.QueueFull:
            raise BatcherFull(
                f"the model service is at capacity: its queue already holds {self.max_queue} requests"
            ) from None
        return await future

    async def _run(self) -> None:
        batch: list[tuple[T, asyncio.Future[R]]] = []
        try:
            while True:
                batch = []
                await self._collect(batch)
                try:
                    await self._dispatch(batch)
                except Exception as exc:  # never let one batch kill the batcher
                    self._fail(batch, exc)
        except asyncio.CancelledError:
            self._fail(batch, BatcherClosed("the service is shutting down"))
            raise

    @staticmethod
    def _fail(batch: list[tuple[T, asyncio.Future[R]]], exc: BaseException) -> None:
        for _, future in batch:
            if not future.done():
                future.set_exception(exc)

    async def _collect(self, batch: list[tuple[T, asyncio.Future[R]]]) -> None:
        """Wait for a first item, then gather more until the batch is full or the wait is over."""
        loop = asyncio.get_running_loop()
        batch.append(await self._queue.get())
        deadline = loop.time() + self.max_wait_s
        while len(batch) < self.max_batch_size:
            if not self._queue.empty():
                batch.append(self._queue.get_nowait())
                continue
            remaining = deadline - loop.time()
            if remaining <= 0:
                break
            try:
                batch.append(await asyncio.wait_for(self._queue.get(), remaining))
            except TimeoutError:
                break

    async def _dispatch(self, batch: list[tuple[T, asyncio.Future[R]]]) -> None:
        live = [(item, future) for item, future in batch if not future.done()]  # skip cancelled callers
        if not live:
            return
        items = [item for item, _ in live]
        if self.in_loop:
            outcomes = self._process_isolated(items)
        else:
            outcomes = await asyncio.get_running_loop().run_in_executor(self._executor, self._process_isolated, items)
        for (_, future), outcome in zip(live, outcomes, strict=True):
            if future.done():
                continue
            if isinstance(outcome, BaseException):
                future.set_exception(outcome)
            else:
                future.set_result(outcome)
        if self.in_loop:
            await asyncio.sleep(0)  # let the callers answer before the next batch is collected

    def _process_isolated(self, items: list[T]) -> list[R | Exception]:
        """Process a batch; if that fails, process each item alone so only bad items fail."""
        try:
            return list(self._checked(items))
        except Exception as exc:
            if len(items) == 1:
                return [exc]
        outcomes: list[R | Exception] = []
        for item in items:
            try:
                outcomes.extend(self._checked([item]))
            except Exception as exc:
                outcomes.append(exc)
        return outcomes

    def _checked(self, items: list[T]) -> Sequence[R]:
        results = self._process(items)
        if len(results) != len(items):
            raise RuntimeError(f"process returned {len(results)} results for {len(items)} items")
        return results
