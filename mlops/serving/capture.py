"""Capture: what production answered, kept for monitoring (`serving.capture`), off the answer's path.

The service hands each answered scoring request to `Capture.record` on the event loop, which appends its
values to column lists (a few microseconds: the request is already parsed and its answer already encoded).
Every `flush_seconds`, or sooner when `flush_requests` wait, a task on the loop swaps the lists for empty ones
and a writer thread turns them into Parquet files under

    <state>/capture/use_case=<name>/environment=<env>/version=<v>/hour=<YYYY-MM-DDTHH>/part-<pid>-<n>.parquet

(Hive partitioning: `read_captured` and any Parquet reader recover the four keys from the path). The writer
only calls pyarrow (conversion and compression in C, the file write outside the GIL): a first design that
built the rows in Python in the thread took the GIL from the event loop in 5 ms slices and cost 40% of the
requests/s and a p99 of 109 ms (docs/benchmarks.md, "Capture of served traffic").

One captured row per scored row: the request id (`X-Request-ID` of the request, or one generated and returned
in that header), the row's index in its request, the time, the request's latency, the inputs as received (the
signature's columns and the use case's `dataset.key_columns`), and the answer.

Bounded by design: when `buffer_requests` wait to be written a request is answered as usual and not captured,
counted in `/metrics` (`mlops_capture_dropped_total`); `sample_rate` < 1 captures that share of requests.
A stop by SIGTERM (uvicorn's shutdown, then the app's lifespan) writes what waits; a SIGKILL loses at most the
requests of the last `flush_seconds` (docs/reliability.md).

Written here, not taken from a library: KServe's logger and SageMaker's data capture are parts of their
platforms; what a local service needs is column lists, one thread and `pyarrow.parquet.write_table`.
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

import orjson

from mlops.config import (
    CAPTURE_PARTITIONS,
    CAPTURED_AT,
    LATENCY_MS,
    PREDICTION,
    REQUEST_ID,
    ROW,
)
from mlops.config import captured_column as column_name
from mlops.serving.schema import Column, Rows

logger = logging.getLogger(__name__)

ARROW_TYPES: dict[str, Any] = {}  # a signature kind's Arrow type, filled on first use (pyarrow imports lazily)


@dataclass(frozen=True)
class CaptureSpec:
    """Where and how one service captures; `directory` is the stack's `<state>/capture`."""

    directory: str
    use_case: str
    environment: str
    version: str
    sample_rate: float = 1.0
    buffer_requests: int = 20_000
    flush_requests: int = 5_000
    flush_seconds: float = 5.0


class _Buffer:
    """Captured rows, column by column; appended to on the event loop only."""

    def __init__(self, names: list[str]) -> None:
        self.requests = 0
        self.columns: dict[str, list[Any]] = {name: [] for name in names}


class Capture:
    """The buffer, the loop task that swaps it and the writer thread. `start`, `record` and `aclose` run on the
    service's event loop; `flush` writes at once (the loop's task, or a caller without a loop)."""

    def __init__(self, spec: CaptureSpec, columns: tuple[Column, ...], keys: tuple[str, ...] = ()) -> None:
        self.spec = spec
        self.columns = columns  # the signature's, typed as the model takes them
        self.keys = tuple(k for k in keys if k not in {c.name for c in columns})  # key columns besides them
        self._names = [REQUEST_ID, ROW, CAPTURED_AT, LATENCY_MS, *(c.name for c in columns), *self.keys, PREDICTION]
        self._buffer = _Buffer(self._names)
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

    def record(self, request_id: str, latency_s: float, rows: Rows, answer: bytes) -> None:
        """Keep one answered request: its values appended to the buffer's columns; a full buffer drops it."""
        if self.spec.sample_rate < 1.0 and random.random() >= self.spec.sample_rate:
            self.sampled_out += 1
            return
        buffer = self._buffer
        if buffer.requests >= self.spec.buffer_requests:
            self.dropped += 1
            return
        n, columns = rows.n_rows, buffer.columns
        columns[PREDICTION].extend(orjson.loads(answer)["predictions"])
        columns[REQUEST_ID].extend([request_id] * n)
        columns[ROW].extend(range(n))
        columns[CAPTURED_AT].extend([time.time()] * n)
        columns[LATENCY_MS].extend([latency_s * 1000.0] * n)
        for column in self.columns:
            columns[column.name].extend(rows.values[column.name])
        for key in self.keys:  # as received; a request without it: null
            columns[key].extend(rows.extras.get(key) or [None] * n)
        buffer.requests += 1
        self.captured += 1
        if buffer.requests >= self.spec.flush_requests and self._wake is not None:
            self._wake.set()

    async def _run(self) -> None:
        assert self._wake is not None
        loop = asyncio.get_running_loop()
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.spec.flush_seconds)
            self._wake.clear()
            taken = self._take()
            if taken.requests:
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
        taken, self._buffer = self._buffer, _Buffer(self._names)
        return taken

    def flush(self) -> int:
        """Write what waits now; returns the rows written."""
        return self._write_buffer(self._take())

    def _write_buffer(self, buffer: _Buffer) -> int:
        if not buffer.requests:
            return 0
        with self._lock:
            try:
                written = self._write(buffer.columns)
            except Exception:  # a full disk must not stop the service; the loss is counted and logged
                self.write_errors += 1
                logger.exception("capture: could not write %s request(s)", buffer.requests)
                return 0
            self.rows_written += written
            return written

    def _write(self, columns: dict[str, list[Any]]) -> int:
        import numpy as np
        import pyarrow as pa
        import pyarrow.parquet as pq

        if not ARROW_TYPES:
            ARROW_TYPES.update(
                double=pa.float64(),
                float=pa.float32(),
                long=pa.int64(),
                integer=pa.int32(),
                string=pa.string(),
                boolean=pa.bool_(),
            )
        at = np.asarray(columns[CAPTURED_AT], dtype=np.float64)
        arrays: dict[str, Any] = {
            REQUEST_ID: pa.array(columns[REQUEST_ID], pa.string()),
            ROW: pa.array(columns[ROW], pa.int32()),
            CAPTURED_AT: pa.array((at * 1000).astype(np.int64), pa.timestamp("ms", tz="UTC")),
            LATENCY_MS: pa.array(columns[LATENCY_MS], pa.float64()),
        }
        for column in self.columns:
            arrays[column_name(column.name)] = pa.array(
                columns[column.name], ARROW_TYPES[column.kind], from_pandas=True
            )
        for key in self.keys:  # types as received; a reader unifies the files' types
            try:
                arrays[column_name(key)] = pa.array(columns[key])
            except (pa.ArrowInvalid, pa.ArrowTypeError):  # mixed types across requests: kept as text
                arrays[column_name(key)] = pa.array([None if v is None else str(v) for v in columns[key]])
        try:
            arrays[PREDICTION] = pa.array(columns[PREDICTION])
        except (pa.ArrowInvalid, pa.ArrowTypeError):  # answers of mixed shapes: kept as their JSON
            arrays[PREDICTION] = pa.array([orjson.dumps(p).decode() for p in columns[PREDICTION]])
        table = pa.table(arrays)
        hours = (at // 3600).astype(np.int64)
        for hour in np.unique(hours):
            part = table if len(np.unique(hours)) == 1 else table.filter(pa.array(hours == hour))
            folder = (
                Path(self.spec.directory)
                / f"use_case={self.spec.use_case}"
                / f"environment={self.spec.environment}"
                / f"version={self.spec.version}"
                / f"hour={_hour(float(hour) * 3600)}"
            )
            folder.mkdir(parents=True, exist_ok=True)
            name = f"part-{os.getpid()}-{int(time.time() * 1000)}-{next(self._files)}.parquet"
            partial = folder / f".{name}.tmp"
            pq.write_table(part, partial)
            partial.rename(folder / name)  # a reader never sees half a file
        return table.num_rows


def _hour(at: float) -> str:
    return datetime.fromtimestamp(at, UTC).strftime("%Y-%m-%dT%H")


def read_captured(
    directory: Path,
    use_case: str,
    *,
    environment: str | None = None,
    versions: list[str] | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
) -> Any:
    """The captured rows of a use case as a DataFrame (with its partition keys as columns); empty if none."""
    import pandas as pd
    import pyarrow.dataset as ds

    root = Path(directory) / f"use_case={use_case}"
    files = sorted(str(p) for p in root.glob("environment=*/version=*/hour=*/part-*.parquet"))
    if not files:
        return pd.DataFrame(columns=[REQUEST_ID, ROW, CAPTURED_AT, LATENCY_MS, PREDICTION, *CAPTURE_PARTITIONS])
    import pyarrow as pa
    import pyarrow.parquet as pq

    keys = pa.schema([("environment", pa.string()), ("version", pa.string()), ("hour", pa.string())])
    # Files of one version share the signature's types; a key column seen only as nulls in one file is promoted.
    schema = pa.unify_schemas([pq.read_schema(f) for f in files] + [keys], promote_options="permissive")
    partitioning = ds.partitioning(keys, flavor="hive")
    dataset = ds.dataset(
        files, schema=schema, format="parquet", partitioning=partitioning, partition_base_dir=str(root)
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
    frame = dataset.to_table(filter=condition).to_pandas()
    frame.insert(0, "use_case", use_case)
    return frame
