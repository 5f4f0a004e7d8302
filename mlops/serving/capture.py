"""Capture: what production answered, kept for monitoring (`serving.capture`), off the answer's path.

The service hands each answered scoring request to `Capture.record` on the event loop: its id, time, latency,
the request body as received and the answer as sent, appended to a buffer (about a microsecond: nothing is
parsed or copied, both byte strings exist already). Every `flush_seconds`, or sooner when `flush_requests`
wait, a task on the loop swaps the buffer for an empty one and a writer thread writes it, one Parquet row per
request, under

    <state>/capture/use_case=<name>/environment=<env>/version=<v>/hour=<YYYY-MM-DDTHH>/part-<pid>-<n>.parquet

(Hive partitions). The writer only calls pyarrow on byte strings (a copy and zstd, in C). `read_captured`
turns the requests back into one row per scored row: the request id (`X-Request-ID` of the request, or one
generated and returned in that header), the row's index in its request, the time, the latency, every input
column the request carried (the model's and any other, e.g. the use case's key columns), and the answer. The
JSON is parsed there, by the monitoring jobs, not by the service: two earlier designs that parsed or built
rows in the service cost 40% and then 22% of its requests/s at 32 connections (docs/benchmarks.md, "Capture of
served traffic"); a thread doing Python work takes the GIL from the event loop in 5 ms slices.

Bounded by design: past `buffer_requests` requests or `buffer_bytes` bytes waiting to be written, a request is
answered as usual and not captured, counted in `/metrics` (`mlops_capture_dropped_total`); `sample_rate` < 1
captures that share of requests. A stop by SIGTERM (uvicorn's shutdown, then the app's lifespan) writes what
waits; a SIGKILL loses at most the requests of the last `flush_seconds` (docs/reliability.md).

Written here, not taken from a library: KServe's logger and SageMaker's data capture are parts of their
platforms; what a local service needs is a few lists, one thread and `pyarrow.parquet.write_table`.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import os
import random
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from mlops.config import CAPTURE_PARTITIONS, CAPTURED_AT, LATENCY_MS, PREDICTION, REQUEST_ID, ROW
from mlops.config import captured_column as column_name

logger = logging.getLogger(__name__)

BODY, ANSWER, ROWS = "body", "answer", "rows"  # a written request's own columns, besides id, time and latency


@dataclass(frozen=True)
class CaptureSpec:
    """Where and how one service captures; `directory` is the stack's `<state>/capture`."""

    directory: str
    use_case: str
    environment: str
    version: str
    sample_rate: float = 1.0
    buffer_requests: int = 20_000
    buffer_bytes: int = 64 * 1024 * 1024
    flush_requests: int = 5_000
    flush_seconds: float = 5.0


class _Buffer:
    """Answered requests waiting to be written; appended to on the event loop only."""

    def __init__(self) -> None:
        self.ids: list[str] = []
        self.at: list[float] = []
        self.latency_ms: list[float] = []
        self.rows: list[int] = []
        self.bodies: list[bytes] = []
        self.answers: list[bytes] = []
        self.bytes = 0


class Capture:
    """The buffer, the loop task that swaps it and the writer thread. `start`, `record` and `aclose` run on the
    service's event loop; `flush` writes at once (the loop's task, or a caller without a loop)."""

    def __init__(self, spec: CaptureSpec) -> None:
        self.spec = spec
        self._buffer = _Buffer()
        self._files = itertools.count()
        self._lock = threading.Lock()  # one write at a time
        self._writer = ThreadPoolExecutor(1, thread_name_prefix="capture-writer")
        self._task: asyncio.Task[None] | None = None
        self._wake: asyncio.Event | None = None
        self.captured = self.dropped = self.sampled_out = self.rows_written = self.write_errors = 0

    def start(self) -> None:
        Path(self.spec.directory).mkdir(parents=True, exist_ok=True)
        self._wake = asyncio.Event()
        self._task = asyncio.get_running_loop().create_task(self._run(), name="capture-flush")

    def record(self, request_id: str, latency_s: float, body: bytes, answer: bytes, rows: int) -> None:
        """Keep one answered request as it came and went; a full buffer drops it (counted)."""
        if self.spec.sample_rate < 1.0 and random.random() >= self.spec.sample_rate:
            self.sampled_out += 1
            return
        buffer, size = self._buffer, len(body) + len(answer)
        if len(buffer.ids) >= self.spec.buffer_requests or buffer.bytes + size > self.spec.buffer_bytes:
            self.dropped += 1
            return
        buffer.ids.append(request_id)
        buffer.at.append(time.time())
        buffer.latency_ms.append(latency_s * 1000.0)
        buffer.rows.append(rows)
        buffer.bodies.append(body)
        buffer.answers.append(answer)
        buffer.bytes += size
        self.captured += 1
        if len(buffer.ids) >= self.spec.flush_requests and self._wake is not None:
            self._wake.set()

    async def _run(self) -> None:
        assert self._wake is not None
        loop = asyncio.get_running_loop()
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.spec.flush_seconds)
            self._wake.clear()
            taken = self._take()
            if taken.ids:
                await loop.run_in_executor(self._writer, self._write_buffer, taken)

    async def aclose(self) -> None:
        """Stop the loop's task and write what waits (the service's shutdown)."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await asyncio.get_running_loop().run_in_executor(self._writer, self.flush)
        self._writer.shutdown(wait=True)

    def _take(self) -> _Buffer:
        taken, self._buffer = self._buffer, _Buffer()
        return taken

    def flush(self) -> int:
        """Write what waits now; returns the scored rows written."""
        return self._write_buffer(self._take())

    def _write_buffer(self, buffer: _Buffer) -> int:
        if not buffer.ids:
            return 0
        with self._lock:
            try:
                self._write(buffer)
            except Exception:  # a full disk must not stop the service; the loss is counted and logged
                self.write_errors += 1
                logger.exception("capture: could not write %s request(s)", len(buffer.ids))
                return 0
            written = sum(buffer.rows)
            self.rows_written += written
            return written

    def _write(self, buffer: _Buffer) -> None:
        import numpy as np
        import pyarrow as pa
        import pyarrow.parquet as pq

        at = np.asarray(buffer.at, dtype=np.float64)
        table = pa.table(
            {
                REQUEST_ID: pa.array(buffer.ids, pa.string()),
                CAPTURED_AT: pa.array((at * 1000).astype(np.int64), pa.timestamp("ms", tz="UTC")),
                LATENCY_MS: pa.array(buffer.latency_ms, pa.float64()),
                ROWS: pa.array(buffer.rows, pa.int32()),
                BODY: pa.array(buffer.bodies, pa.binary()),
                ANSWER: pa.array(buffer.answers, pa.binary()),
            }
        )
        hours = (at // 3600).astype(np.int64)
        distinct = np.unique(hours)
        for hour in distinct:
            part = table if len(distinct) == 1 else table.filter(pa.array(hours == hour))
            folder = (
                Path(self.spec.directory)
                / f"use_case={self.spec.use_case}"
                / f"environment={self.spec.environment}"
                / f"version={self.spec.version}"
                / f"hour={datetime.fromtimestamp(float(hour) * 3600, UTC):%Y-%m-%dT%H}"
            )
            folder.mkdir(parents=True, exist_ok=True)
            name = f"part-{os.getpid()}-{int(time.time() * 1000)}-{next(self._files)}.parquet"
            partial = folder / f".{name}.tmp"
            pq.write_table(part, partial, compression="zstd")
            partial.rename(folder / name)  # a reader never sees half a file


def _requests(
    directory: Path,
    use_case: str,
    environment: str | None,
    versions: list[str] | None,
    since: datetime | None,
    until: datetime | None,
    columns: list[str] | None = None,
) -> Any:
    """The captured requests (one row each, not parsed) that match, as a pyarrow table; None when there are none."""
    import pyarrow as pa
    import pyarrow.dataset as ds

    root = Path(directory) / f"use_case={use_case}"
    files = sorted(str(p) for p in root.glob("environment=*/version=*/hour=*/part-*.parquet"))
    if not files:
        return None
    keys = pa.schema([("environment", pa.string()), ("version", pa.string()), ("hour", pa.string())])
    dataset = ds.dataset(
        files, format="parquet", partitioning=ds.partitioning(keys, flavor="hive"), partition_base_dir=str(root)
    )
    condition = None
    for clause in (
        ds.field("environment") == environment if environment else None,
        ds.field("version").isin(versions) if versions else None,
        ds.field(CAPTURED_AT) >= since if since else None,
        ds.field(CAPTURED_AT) < until if until else None,
    ):
        if clause is not None:
            condition = clause if condition is None else condition & clause
    return dataset.to_table(columns=columns, filter=condition)


def count_captured(
    directory: Path,
    use_case: str,
    *,
    environment: str | None = None,
    versions: list[str] | None = None,
    since: datetime | None = None,
) -> int:
    """How many scored rows were captured (from each request's row count: nothing is parsed)."""
    table = _requests(directory, use_case, environment, versions, since, None, columns=[ROWS])
    return 0 if table is None else int(sum(table.column(ROWS).to_pylist()))


def read_captured(
    directory: Path,
    use_case: str,
    *,
    environment: str | None = None,
    versions: list[str] | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
) -> Any:
    """The captured traffic of a use case, one row per scored row, as a DataFrame: request id, row, time,
    latency, the inputs as received, the answer (`prediction`), and the partition keys; empty if none."""
    import pandas as pd

    table = _requests(directory, use_case, environment, versions, since, until)
    if table is None:
        return pd.DataFrame(columns=[REQUEST_ID, ROW, CAPTURED_AT, LATENCY_MS, PREDICTION, *CAPTURE_PARTITIONS])
    frame = pd.DataFrame(_scored_rows(table.to_pydict()))
    frame.insert(0, "use_case", use_case)
    return frame


def _scored_rows(requests: dict[str, list[Any]]) -> list[dict[str, Any]]:
    """Each captured request's body and answer parsed back into one record per scored row."""
    import orjson

    found = []
    for i, body in enumerate(requests[BODY]):
        payload = orjson.loads(body)
        if "dataframe_split" in payload:
            split = payload["dataframe_split"]
            records = [dict(zip(split["columns"], row, strict=True)) for row in split["data"]]
        else:
            records = payload["dataframe_records"]
        predictions = orjson.loads(requests[ANSWER][i])["predictions"]
        own = {key: requests[key][i] for key in (REQUEST_ID, CAPTURED_AT, LATENCY_MS, "environment", "version", "hour")}
        for row, record in enumerate(records):
            inputs = {column_name(name): value for name, value in record.items()}
            found.append({**own, ROW: row, PREDICTION: predictions[row], **inputs})
    return found
