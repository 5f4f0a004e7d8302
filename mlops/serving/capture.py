"""Capture: what production answered, kept for monitoring (`serving.capture`), off the answer's path.

The service hands each answered scoring request to `Capture.record` on the event loop: an append to a
bounded in-memory buffer and nothing else. A writer thread drains the buffer every `flush_seconds` (or
sooner when it holds `flush_requests`) into Parquet files under

    <state>/capture/use_case=<name>/environment=<env>/version=<v>/hour=<YYYY-MM-DDTHH>/part-<pid>-<n>.parquet

(Hive partitioning: `read_captured` and any Parquet reader recover the four keys from the path). One
captured row per scored row: the request id (`X-Request-ID` of the request, or one generated and
returned in that header), the row's index in its request, the time, the request's latency, the
inputs as received (the signature's columns and the use case's `dataset.key_columns`), and the answer.

Bounded by design: when the buffer is full a request is answered as usual and not captured, counted
in `/metrics` (`mlops_capture_dropped_total`); `sample_rate` < 1 captures that share of requests.
A stop by SIGTERM (uvicorn's shutdown, then the app's lifespan) writes what the buffer holds; a SIGKILL
loses at most the buffer: the requests of the last `flush_seconds` (docs/reliability.md).

Written here, not taken from a library: KServe's logger and SageMaker's data capture are parts of
their platforms; what a local service needs is a deque, a thread and `pyarrow.parquet.write_table`.
"""

from __future__ import annotations

import itertools
import logging
import os
import random
import threading
import time
from collections import deque
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


class Capture:
    """The buffer and its writer thread. `record` is called on the event loop; `close` writes the rest."""

    def __init__(self, spec: CaptureSpec, columns: tuple[Column, ...], keys: tuple[str, ...] = ()) -> None:
        self.spec = spec
        self.columns = columns  # the signature's, typed as the model takes them
        self.keys = tuple(k for k in keys if k not in {c.name for c in columns})  # key columns besides them
        self._buffer: deque[tuple[str, float, float, Rows, bytes]] = deque()
        self._wake = threading.Event()
        self._closing = False
        self._files = itertools.count()
        self._lock = threading.Lock()  # one flush at a time (the thread's, or close's)
        self.captured = self.dropped = self.sampled_out = self.rows_written = self.write_errors = 0
        self._thread = threading.Thread(target=self._run, name="capture-writer", daemon=True)

    def start(self) -> None:
        Path(self.spec.directory).mkdir(parents=True, exist_ok=True)
        self._thread.start()

    def record(self, request_id: str, latency_s: float, rows: Rows, answer: bytes) -> None:
        """Keep one answered request (O(1)); a full buffer drops it and counts the drop."""
        if self.spec.sample_rate < 1.0 and random.random() >= self.spec.sample_rate:
            self.sampled_out += 1
            return
        if len(self._buffer) >= self.spec.buffer_requests:
            self.dropped += 1
            return
        self._buffer.append((request_id, time.time(), latency_s, rows, answer))
        self.captured += 1
        if len(self._buffer) >= self.spec.flush_requests:
            self._wake.set()

    def close(self) -> None:
        """Stop the writer and write what the buffer holds (the service's shutdown)."""
        self._closing = True
        self._wake.set()
        if self._thread.is_alive():
            self._thread.join(timeout=60)
        self.flush()

    def _run(self) -> None:
        while not self._closing:
            self._wake.wait(self.spec.flush_seconds)
            self._wake.clear()
            if not self._closing:
                self.flush()

    def flush(self) -> int:
        """Write the buffered requests, one file per hour they were answered in; returns the rows written."""
        with self._lock:
            taken = [self._buffer.popleft() for _ in range(len(self._buffer))]
            if not taken:
                return 0
            written = 0
            for hour, items in itertools.groupby(taken, key=lambda item: _hour(item[1])):
                try:
                    written += self._write(hour, list(items))
                except Exception:  # a full disk must not stop the service; the drop is counted and logged
                    self.write_errors += 1
                    logger.exception("capture: could not write %s request(s) of hour %s", len(taken), hour)
            self.rows_written += written
            return written

    def _write(self, hour: str, items: list[tuple[str, float, float, Rows, bytes]]) -> int:
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

        sizes = [rows.n_rows for _, _, _, rows, _ in items]
        table: dict[str, Any] = {
            REQUEST_ID: [rid for (rid, *_), n in zip(items, sizes, strict=True) for _ in range(n)],
            ROW: [i for n in sizes for i in range(n)],
            CAPTURED_AT: pa.array(
                [int(at * 1000) for (_, at, *_), n in zip(items, sizes, strict=True) for _ in range(n)],
                pa.timestamp("ms", tz="UTC"),
            ),
            LATENCY_MS: [lat * 1000 for (_, _, lat, _, _), n in zip(items, sizes, strict=True) for _ in range(n)],
        }
        for column in self.columns:
            values = itertools.chain.from_iterable(rows.values[column.name] for *_, rows, _ in items)
            table[column_name(column.name)] = pa.array(list(values), ARROW_TYPES[column.kind], from_pandas=True)
        for key in self.keys:  # as received (absent: null); a reader unifies the files' types
            values = itertools.chain.from_iterable(
                rows.extras.get(key) or [None] * rows.n_rows for *_, rows, _ in items
            )
            table[column_name(key)] = list(values)
        predictions = list(itertools.chain.from_iterable(orjson.loads(answer)["predictions"] for *_, answer in items))
        try:
            table[PREDICTION] = pa.array(predictions)
        except (pa.ArrowInvalid, pa.ArrowTypeError):  # answers of mixed shapes: kept as their JSON
            table[PREDICTION] = [orjson.dumps(p).decode() for p in predictions]
        spec = self.spec
        folder = (
            Path(spec.directory)
            / f"use_case={spec.use_case}"
            / f"environment={spec.environment}"
            / f"version={spec.version}"
            / f"hour={hour}"
        )
        folder.mkdir(parents=True, exist_ok=True)
        name = f"part-{os.getpid()}-{int(time.time() * 1000)}-{next(self._files)}.parquet"
        partial = folder / f".{name}.tmp"
        pq.write_table(pa.table(table), partial)
        partial.rename(folder / name)  # a reader never sees half a file
        return len(table[ROW])


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
