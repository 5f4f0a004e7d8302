"""A shadow challenger in the model service (`delivery.strategy: shadow`): a second model version scores every
request the served version answered, after the answer is sent, and what it would have answered is captured.

The client only ever sees the served version's answer: the shadow's scoring starts once that answer is ready,
as a task of its own with its own batcher (and its own bounded queue: a shadow that cannot keep up drops, and
counts, requests instead of slowing anything), and its answers go to the capture under the environment
`<environment>-shadow` with the shadow's version, keyed by the same request id and row as the served answer.
CD's shadow gate (tasks/shadow.py) joins the two.
"""

from __future__ import annotations

import asyncio
import logging
import time

from prometheus_client import Counter

from mlops.serving.batching import BatcherFull, MicroBatcher
from mlops.serving.capture import Capture
from mlops.serving.model import ServedModel, limit_native_threads
from mlops.serving.schema import Rows

logger = logging.getLogger(__name__)


class Shadow:
    """The shadow model, its batcher and its capture. Use as `async with shadow:` around the service's life."""

    def __init__(
        self, model: ServedModel, capture: Capture | None, *, max_batch_size: int, max_queue: int | None
    ) -> None:
        self.model = model
        self.capture = capture
        self.batcher: MicroBatcher[Rows, bytes] = MicroBatcher(
            model.predict,
            max_batch_size=max_batch_size,
            max_wait_ms=0.0,
            max_queue=max_queue,
            thread_initializer=limit_native_threads,
            in_loop=model.predicts_in_loop,
        )
        self._pending: set[asyncio.Task[None]] = set()
        self.outcomes: Counter | None = None  # set by ServiceMetrics: scored, dropped, failed

    async def __aenter__(self) -> Shadow:
        if self.capture is not None:
            self.capture.start()
        await self.batcher.__aenter__()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        if self._pending:  # answers already sent: let their shadow scoring finish (bounded by the queue)
            await asyncio.gather(*self._pending, return_exceptions=True)
        await self.batcher.__aexit__(*exc_info)
        if self.capture is not None:
            await self.capture.aclose()

    def score_later(self, request_id: str, body: bytes, rows: Rows) -> None:
        """Score `rows` with the shadow after this request's answer; called once that answer is ready."""
        task = asyncio.get_running_loop().create_task(self._score(request_id, body, rows))
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)

    async def _score(self, request_id: str, body: bytes, rows: Rows) -> None:
        started = time.perf_counter()
        try:
            answer = await self.batcher.submit(rows)
        except BatcherFull:
            self._count("dropped")
            return
        except Exception:
            self._count("failed")
            logger.exception("the shadow model failed on request %s", request_id)
            return
        self._count("scored")
        if self.capture is not None:
            self.capture.record(request_id, time.perf_counter() - started, body, answer, rows.n_rows)

    def _count(self, outcome: str) -> None:
        if self.outcomes is not None:
            self.outcomes.labels(outcome=outcome).inc()
