"""Batch-scoring tasks: cut a window or take a file, check it, fetch the model once, score in chunks, report."""

from __future__ import annotations

from pathlib import Path

from prefect import task
from prefect.artifacts import create_markdown_artifact
from prefect.logging import get_run_logger

from mlops import render
from mlops.adapters import batch_io, model_files, registry, sources
from mlops.config import Config
from mlops.domain import scoring, validation
from mlops.domain.record import Record
from tasks.retries import IO_RETRIES, retry_unless


class ScoringInput(Record):
    """What will be scored: a file on disk and how to describe it."""

    path: Path
    label: str  # the file's path, or "window 2013-02-01..2013-03-01"


class FetchedModel(Record):
    """A registry version pinned and downloaded once; the scoring task loads it from `local_path`."""

    name: str
    version: str
    run_id: str | None
    uri: str
    local_path: Path


@task
def locate_input(input_path: str) -> ScoringInput:
    """The file to score, checked to exist and to be CSV or Parquet."""
    path = Path(input_path).expanduser().resolve()
    scoring.input_format(path)
    if not path.is_file():
        raise FileNotFoundError(f"input file not found: {path}")
    return ScoringInput(path=path, label=str(path))


@task(**IO_RETRIES)
def extract_scoring_window(
    config: Config, as_of: str | None, months: int, workdir: Path, chunk_rows: int
) -> ScoringInput:
    """Cut a window of the configured source (as CT's extract does) to Parquet, one row group per chunk."""
    loaded = sources.load_window(config, as_of=as_of, months=months, declared_only=False)
    window = loaded.frame
    workdir.mkdir(parents=True, exist_ok=True)
    path = workdir / "window.parquet"
    window[scoring.read_plan(list(window.columns), config)].to_parquet(path, index=False, row_group_size=chunk_rows)
    get_run_logger().info("extracted %d rows of %s, window %s", len(window), config.dataset.name, loaded.window.label())
    return ScoringInput(path=path, label=f"window {loaded.window.label()}")


@task
def check_input(config: Config, source: ScoringInput) -> None:
    """Fail up front, with a report naming each column, when the input lacks a model input or has no rows."""
    violations = sources.file_problems(source.path, scoring.input_format(source.path))
    try:
        sample = batch_io.read_sample(source.path) if not violations else None
    except (ValueError, OSError) as exc:  # not CSV or Parquet after all, a damaged Parquet footer, ...
        sample, violations = (
            None,
            [validation.Violation(column="*", rule="unreadable_file", detail=f"{type(exc).__name__}: {exc}"[:500])],
        )
    if sample is not None:
        violations = scoring.check_input_schema(sample, config)
    if violations:
        create_markdown_artifact(
            key="scoring-input",
            markdown=render.scoring_refused_markdown(source.label, violations),
            description="Why the input was refused",
        )
        raise scoring.ScoringInputError(source.label, violations)
    keys = scoring.output_keys(batch_io.read_columns(source.path), config)
    get_run_logger().info("%s has every model input; output keys %s", source.label, keys)


@task(**IO_RETRIES, retry_condition_fn=retry_unless(batch_io.ModelNotFoundError))
def fetch_model(config: Config, version: str | None, workdir: Path) -> FetchedModel:
    """Pin the champion (or the given version) to one registry version and download it."""
    import mlflow

    client = registry.connect(config)
    resolved = batch_io.resolve_model(client, config.tracking.model_name, version, registry.CHAMPION)
    local = mlflow.artifacts.download_artifacts(artifact_uri=resolved.uri, dst_path=str(workdir / "model"))
    get_run_logger().info(
        "scoring with %s (%s)", resolved.uri, f"version {version}" if version else f"@{registry.CHAMPION}"
    )
    return FetchedModel(
        name=resolved.name, version=resolved.version, run_id=resolved.run_id, uri=resolved.uri, local_path=Path(local)
    )


@task
def score_input(
    config: Config, model: FetchedModel, source: ScoringInput, output: Path, chunk_rows: int, native_threads: int | None
) -> scoring.ScoreResult:
    """Load the model once and score the input chunk by chunk into `output` and its rejects file."""

    logger = get_run_logger()
    loaded = model_files.load_local_model(model.local_path)
    contract = validation.load_contract(config)

    def progress(chunk: batch_io.ChunkReport) -> None:
        rate = chunk.total.rows_read / max(chunk.seconds, 1e-9)
        logger.info(
            "chunk %d: %d rows, %d scored, %d rejected; total %d rows in %.1f s (%.0f rows/s)",
            chunk.number,
            chunk.rows,
            chunk.scored,
            chunk.rejected,
            chunk.total.rows_read,
            chunk.seconds,
            rate,
        )

    logger.info(
        "scoring %s in chunks of %d rows; contract %s; native threads %s",
        source.label,
        chunk_rows,
        config.dataset.contract_path.name if contract else "none",
        native_threads or "default",
    )
    return batch_io.score_file(
        source.path,
        loaded,
        config,
        version=model.version,
        output=output,
        chunk_rows=chunk_rows,
        contract=contract,
        native_threads=native_threads,
        progress=progress,
    )


@task
def publish_scoring_report(model: FetchedModel, source: ScoringInput, result: scoring.ScoreResult) -> None:
    """The run's figures as a markdown artifact: rows read, scored, rejected by reason, files, speed."""
    create_markdown_artifact(
        key="batch-scoring",
        markdown=render.scoring_markdown(model, source.label, result),
        description=f"{model.name} v{model.version} on {source.label}",
    )
    tally = result.tally
    get_run_logger().info(
        "scored %d of %d rows (%d rejected) in %.1f s into %s",
        tally.rows_scored,
        tally.rows_read,
        tally.rows_rejected,
        result.seconds,
        result.output_path,
    )
