"""Batch scoring's I/O: read the input in chunks, resolve the model, score a file into Parquet. No Prefect here.

The pure per-chunk steps live in `mlops.domain.scoring`. Memory stays bounded by the chunk size:
`score_file` holds one chunk of the input and that chunk's predictions at a time, appending each
to the output Parquet file as a row group.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from mlops.adapters import registry
from mlops.config import Config
from mlops.domain.evaluation import predict_outputs
from mlops.domain.scoring import (
    DEFAULT_CHUNK_ROWS,
    SAMPLE_ROWS,
    ScoreResult,
    ScoringInputError,
    Screened,
    Tally,
    input_format,
    key_frame,
    non_nullable_columns,
    null_intolerant_columns,
    output_keys,
    prediction_frame,
    read_plan,
    reject_frame,
    rejects_path_for,
    screen_chunk,
)
from mlops.domain.validation import Contract, Violation


class ModelNotFoundError(LookupError):
    """The registry has no such version, or no model behind the alias."""


def read_columns(path: Path) -> list[str]:
    """The input's column names, from the Parquet schema or the CSV header."""
    if input_format(path) == "parquet":
        import pyarrow.parquet as pq

        return list(pq.read_schema(path).names)
    return list(pd.read_csv(path, nrows=0).columns)


def read_sample(path: Path, rows: int = SAMPLE_ROWS) -> pd.DataFrame:
    """The first rows of the input with the types the chunks will have (empty when it has no rows)."""
    if input_format(path) == "parquet":
        import pyarrow.parquet as pq

        with pq.ParquetFile(path) as parquet:
            first = next(parquet.iter_batches(batch_size=rows), None)
            return (first if first is not None else parquet.schema_arrow.empty_table()).to_pandas()
    return pd.read_csv(path, nrows=rows)


def iter_chunks(path: Path, chunk_rows: int, columns: list[str]) -> Iterator[pd.DataFrame]:
    """The input's `columns`, `chunk_rows` rows at a time, each indexed by its rows' positions in the file."""
    if chunk_rows < 1:
        raise ValueError(f"chunk_rows must be at least 1, got {chunk_rows}")
    offset = 0
    if input_format(path) == "parquet":
        import pyarrow.parquet as pq

        with pq.ParquetFile(path) as parquet:
            for batch in parquet.iter_batches(batch_size=chunk_rows, columns=columns):
                chunk = batch.to_pandas()
                del batch
                chunk.index = pd.RangeIndex(offset, offset + len(chunk))
                offset += len(chunk)
                yield chunk
                del chunk  # let the caller's chunk go before the next one is read
        return
    with pd.read_csv(path, usecols=columns, chunksize=chunk_rows) as reader:
        for chunk in reader:
            chunk.index = pd.RangeIndex(offset, offset + len(chunk))
            offset += len(chunk)
            yield chunk
            del chunk


def resolve_model(client: Any, name: str, version: str | None, alias: str) -> registry.VersionRef:
    """The registered version asked for, or the one behind `alias`; ModelNotFoundError when there is none."""
    found = registry.version(client, name, version) if version else registry.aliased(client, name, alias)
    if found is None:
        raise ModelNotFoundError(
            f"registered model {name!r} has no {f'version {version}' if version else f'alias @{alias}'}"
        )
    return found


@dataclass(frozen=True)
class ChunkReport:
    """Handed to the progress callback after each chunk."""

    number: int
    rows: int
    scored: int
    rejected: int
    total: Tally
    seconds: float  # since scoring started


def _native_threads(limit: int | None) -> Any:
    if limit is None:
        return nullcontext()
    from threadpoolctl import threadpool_limits

    return threadpool_limits(limits=limit)


class _ParquetSink:
    """Appends frames to one Parquet file, one row group each, under a temporary name until `commit`."""

    def __init__(self, path: Path):
        self.path = path
        self.partial = path.with_name(path.name + ".partial")
        self._writer: Any = None
        self._schema: Any = None

    @property
    def opened(self) -> bool:
        return self._writer is not None

    def write(self, frame: pd.DataFrame) -> None:
        import pyarrow as pa
        import pyarrow.parquet as pq

        table = pa.Table.from_pandas(frame, preserve_index=False)
        if self._writer is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._schema = table.schema
            self._writer = pq.ParquetWriter(self.partial, self._schema)
        elif not table.schema.equals(self._schema, check_metadata=False):
            # Types inferred per chunk can drift (an integer key with a null in one CSV chunk reads as float).
            table = table.cast(self._schema)
        self._writer.write_table(table)

    def commit(self) -> None:
        self._writer.close()
        os.replace(self.partial, self.path)

    def discard(self) -> None:
        if self._writer is not None:
            self._writer.close()
        self.partial.unlink(missing_ok=True)


def score_file(
    path: Path,
    model: Any,
    config: Config,
    *,
    version: str,
    output: Path,
    chunk_rows: int = DEFAULT_CHUNK_ROWS,
    contract: Contract | None = None,
    native_threads: int | None = None,
    progress: Callable[[ChunkReport], None] | None = None,
) -> ScoreResult:
    """Score a CSV or Parquet file chunk by chunk into `output` (Parquet) and its rejects file beside it.

    Both files appear only when the whole input has been scored (they are written under a temporary
    name and renamed); a failure leaves neither. Raises ScoringInputError, before writing anything,
    when a column the model needs is missing. `native_threads` caps the threads of the model's
    native code (OpenMP, BLAS) while scoring; None leaves the libraries' default (one per core).
    """
    path = Path(path)
    columns = read_columns(path)
    needed = list(dict.fromkeys([*config.dataset.features, *getattr(model, "feature_names_in_", [])]))
    missing = [c for c in needed if c not in columns]
    if missing:
        raise ScoringInputError(
            str(path), [Violation(column=c, rule="missing_column", detail="a model input") for c in missing]
        )
    keys = output_keys(columns, config)
    non_nullable = non_nullable_columns(config, contract) | null_intolerant_columns(model, config)
    classes = getattr(model, "classes_", None)
    if config.task != "regression" and classes is None:
        raise ValueError(f"a {config.task} model needs its classes (`classes_`) to be scored")
    n_outputs = 0 if classes is None or config.task == "regression" else len(classes)
    predictions, rejects = _ParquetSink(output), _ParquetSink(rejects_path_for(output))
    tally, chunks, empty = Tally(), 0, None
    started = time.perf_counter()

    def score_chunk(chunk: pd.DataFrame) -> Screened:
        screened = screen_chunk(chunk, config, non_nullable)
        if len(screened.features):
            outputs = predict_outputs(model, screened.features, config.task)
            predictions.write(
                prediction_frame(key_frame(chunk, keys).loc[screened.keep], outputs, classes, config.task, version)
            )
        if len(screened.reasons):
            rejects.write(reject_frame(chunk.loc[~screened.keep], screened.reasons, keys, config))
        return screened

    with _native_threads(native_threads), ExitStack() as cleanup:
        cleanup.callback(predictions.discard)
        cleanup.callback(rejects.discard)
        for chunk in iter_chunks(path, chunk_rows, read_plan(columns, config)):
            screened = score_chunk(chunk)
            tally, chunks, empty = tally.plus(screened), chunks + 1, chunk.iloc[:0]
            if progress is not None:
                progress(
                    ChunkReport(
                        number=chunks,
                        rows=len(chunk),
                        scored=len(screened.features),
                        rejected=len(screened.reasons),
                        total=tally,
                        seconds=time.perf_counter() - started,
                    )
                )
            del chunk, screened  # one chunk in memory at a time: drop this one before the next is read
        if empty is None:
            raise ScoringInputError(
                str(path), [Violation(column="*", rule="no_rows", detail="the input has no rows to score")]
            )
        # Every run leaves both files, empty when nothing was scored or rejected, so no stale file is mistaken for this run's.
        if not predictions.opened:
            no_outputs = np.empty((0, n_outputs) if n_outputs else 0)
            predictions.write(prediction_frame(key_frame(empty, keys), no_outputs, classes, config.task, version))
        if not rejects.opened:
            rejects.write(reject_frame(empty, pd.Series(dtype=object), keys, config))
        rejects.commit()
        predictions.commit()  # last: the output file appearing means the run is complete
        cleanup.pop_all()
    return ScoreResult(
        output_path=output,
        rejects_path=rejects.path,
        model_version=str(version),
        tally=tally,
        chunks=chunks,
        chunk_rows=chunk_rows,
        key_columns=keys,
        seconds=time.perf_counter() - started,
    )
