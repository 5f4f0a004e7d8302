"""Batch scoring (the offline deployment): a file or a data window → champion → predictions + rejects, in chunks."""

from __future__ import annotations

import shutil
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

from prefect import flow, runtime
from pydantic import Field

from mlops.config import load_config
from mlops.domain import scoring
from mlops.domain.window import AsOf, resolve_as_of
from tasks.registry import config_of_version
from tasks.runs import UseCase, require_servers, run_config, run_name, run_parameter, tag_this_run
from tasks.scoring import (
    check_input,
    extract_scoring_window,
    fetch_model,
    locate_input,
    publish_scoring_report,
    score_input,
)


def _run_name() -> str:
    path = run_parameter("input_path")
    return run_name(
        "score", run_config().tracking.model_name, Path(path).name if path else run_parameter("as_of") or "window"
    )


@flow(name="batch-scoring", flow_run_name=_run_name)
def batch_scoring(
    input_path: str | None = None,
    as_of: AsOf = None,
    window_months: Annotated[int | None, Field(ge=1)] = None,
    version: int | str | None = None,
    output_path: str | None = None,
    chunk_rows: Annotated[int, Field(ge=1)] = scoring.DEFAULT_CHUNK_ROWS,
    native_threads: Annotated[int | None, Field(ge=1)] = None,
    use_case: UseCase | None = None,  # type: ignore[valid-type]
) -> dict[str, Any]:
    """Score a CSV/Parquet file, or a window of the configured data, with the champion model.

    The input is read and scored in chunks, so memory stays bounded whatever its size. Its schema
    is checked first: a missing model input column fails the run before anything is written. Rows
    that cannot be scored (a value that is not a number in a numeric column, an infinity, a null
    where the contract or the model allows none) are counted and written to a rejects file with the
    reason; the others are scored. Predictions go to Parquet with the row keys (`dataset.key_columns`,
    or the row number when one is missing from the input), the model version and the prediction:
    binary, the positive class's probability and the label; multiclass, the label and its
    probability; regression, the value. A `batch-scoring` artifact reports the figures.

    Args:
        input_path: A .csv or .parquet file to score (relative to the working directory: the repo root for the
            deployment). Leave empty to score a window of the configured source.
        as_of: Score the window of rows before this date (as CT's extract); "latest": the months up to the
            newest complete month of the data (what the daily schedule uses). Default: the config's `window.as_of`.
        window_months: Length of that window in months. Default: the config's `window.months`.
        version: The registered model version to use. Default: the one with the `champion` alias.
        output_path: Where to write the predictions (Parquet); the rejects go beside it as `<stem>.rejects.parquet`.
            Default: `<state dir>/scores/<model>-v<version>-<UTC time>.parquet`.
        chunk_rows: Rows read, screened and scored at a time; bounds the memory the run needs.
        native_threads: Threads for the model's native code (OpenMP) while scoring. Default: the libraries'
            (one per core). 1 gives steadier throughput on a machine busy with other work (docs/benchmarks.md).
        use_case: Whose model and data (a folder `usecases/<name>/`); default: the stack's.
    """
    if input_path and (as_of or window_months):
        raise ValueError("give input_path, or as_of/window_months for a window of the configured source, not both")
    config = load_config(use_case=use_case)
    require_servers(config)
    tag_this_run([f"use-case:{config.name}"])
    workdir = config.state_dir / "runs" / str(runtime.flow_run.id)
    try:
        if input_path:
            source = locate_input(input_path)
        else:
            as_of_text = resolve_as_of(as_of, config.window.as_of)
            source = extract_scoring_window(
                config, as_of_text, window_months or config.window.months, workdir, chunk_rows
            )
        check_input(config, source)
        model = fetch_model(config, None if version is None else str(version), workdir)
        config = config_of_version(config, model.run_id, f"{model.name} v{model.version}")  # its columns as trained
        output = (
            Path(output_path).expanduser().resolve()
            if output_path
            else scoring.default_output_path(config.state_dir, model.name, model.version, datetime.now(UTC))
        )
        result = score_input(config, model, source, output, chunk_rows, native_threads)
        publish_scoring_report(model, source, result)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    tally = result.tally
    return {
        "model_name": model.name,
        "version": model.version,
        "input": source.label,
        "output_path": str(result.output_path),
        "rejects_path": str(result.rejects_path),
        "rows_read": tally.rows_read,
        "rows_scored": tally.rows_scored,
        "rows_rejected": tally.rows_rejected,
        "rejected_by_reason": tally.rejected_by_reason,
        "chunks": result.chunks,
        "chunk_rows": chunk_rows,
        "native_threads": native_threads,
        "seconds": round(result.seconds, 3),
        "rows_per_second": round(result.rows_per_second, 1),
    }
