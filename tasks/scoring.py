"""Batch-scoring tasks: cut a window or take a file, check it, fetch the model once, score in chunks, report."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prefect import Task, task
from prefect.artifacts import create_markdown_artifact
from prefect.client.schemas.objects import TaskRun
from prefect.logging import get_run_logger
from prefect.states import State
from pydantic import BaseModel, ConfigDict

from mlops import data as data_lib
from mlops import registry, scoring, validation
from mlops.config import Config


class ScoringInput(BaseModel):
    """What will be scored: a file on disk and how to describe it."""

    model_config = ConfigDict(frozen=True)

    path: Path
    label: str  # the file's path, or "window 2013-02-01..2013-03-01"


class FetchedModel(BaseModel):
    """A registry version pinned and downloaded once; the scoring task loads it from `local_path`."""

    model_config = ConfigDict(frozen=True)

    name: str
    version: str
    run_id: str | None
    uri: str
    local_path: Path


def _unless_missing(task: Task[..., Any], task_run: TaskRun, state: State[Any]) -> bool:
    """Retry registry errors, but not a version or alias that does not exist."""
    try:
        state.result()
    except scoring.ModelNotFoundError:
        return False
    except Exception:
        return True
    return True


@task
def locate_input(input_path: str) -> ScoringInput:
    """The file to score, checked to exist and to be CSV or Parquet."""
    path = Path(input_path).expanduser().resolve()
    scoring.input_format(path)
    if not path.is_file():
        raise FileNotFoundError(f"input file not found: {path}")
    return ScoringInput(path=path, label=str(path))


@task(retries=2, retry_delay_seconds=[2, 10])
def extract_scoring_window(config: Config, as_of: str | None, months: int, workdir: Path, chunk_rows: int) -> ScoringInput:
    """Cut a window of the configured source (as CT's extract does) to Parquet, one row group per chunk."""
    full = data_lib.load_source(config)
    bounds = data_lib.window_bounds(full, config.dataset.time_column, as_of, months)
    window = data_lib.cut_window(full, config.dataset.time_column, bounds)
    del full
    workdir.mkdir(parents=True, exist_ok=True)
    path = workdir / "window.parquet"
    window[scoring.read_plan(list(window.columns), config)].to_parquet(path, index=False, row_group_size=chunk_rows)
    get_run_logger().info("extracted %d rows of %s, window %s", len(window), config.dataset.name, bounds.label())
    return ScoringInput(path=path, label=f"window {bounds.label()}")


@task
def check_input(config: Config, source: ScoringInput) -> None:
    """Fail up front, with a report naming each column, when the input lacks a model input or has no rows."""
    sample = scoring.read_sample(source.path)
    violations = scoring.check_input_schema(sample, config)
    if violations:
        rows = "\n".join(f"| `{v.column}` | {v.rule} | {v.detail} |" for v in violations)
        create_markdown_artifact(
            key="scoring-input",
            markdown=f"# Cannot score {source.label}\n\nNothing was scored or written.\n\n"
            f"| column | rule | detail |\n|---|---|---|\n{rows}\n",
            description="Why the input was refused",
        )
        raise scoring.ScoringInputError(source.label, violations)
    keys = scoring.output_keys(scoring.read_columns(source.path), config)
    get_run_logger().info("%s has every model input; output keys %s", source.label, keys)


@task(retries=3, retry_delay_seconds=[2, 5, 15], retry_condition_fn=_unless_missing)
def fetch_model(config: Config, version: str | None, workdir: Path) -> FetchedModel:
    """Pin the champion (or the given version) to one registry version and download it."""
    import mlflow

    client = registry.connect(config)
    resolved = scoring.resolve_model(client, config.tracking.model_name, version, registry.CHAMPION)
    local = mlflow.artifacts.download_artifacts(artifact_uri=resolved.uri, dst_path=str(workdir / "model"))
    get_run_logger().info("scoring with %s (%s)", resolved.uri, f"version {version}" if version else f"@{registry.CHAMPION}")
    return FetchedModel(name=resolved.name, version=resolved.version, run_id=resolved.run_id, uri=resolved.uri, local_path=Path(local))


@task
def score_input(
    config: Config, model: FetchedModel, source: ScoringInput, output: Path, chunk_rows: int, native_threads: int | None
) -> scoring.ScoreResult:
    """Load the model once and score the input chunk by chunk into `output` and its rejects file."""
    import mlflow.sklearn

    logger = get_run_logger()
    loaded = mlflow.sklearn.load_model(str(model.local_path))
    contract_path = config.dataset.contract_path
    contract = validation.Contract.load(contract_path) if contract_path.exists() else None

    def progress(chunk: scoring.ChunkReport) -> None:
        rate = chunk.total.rows_read / max(chunk.seconds, 1e-9)
        logger.info("chunk %d: %d rows, %d scored, %d rejected; total %d rows in %.1f s (%.0f rows/s)", chunk.number, chunk.rows,
                    chunk.scored, chunk.rejected, chunk.total.rows_read, chunk.seconds, rate)

    logger.info("scoring %s in chunks of %d rows; contract %s; native threads %s", source.label, chunk_rows,
                contract_path.name if contract else "none", native_threads or "default")
    return scoring.score_file(source.path, loaded, config, version=model.version, output=output, chunk_rows=chunk_rows,
                              contract=contract, native_threads=native_threads, progress=progress)


@task
def publish_scoring_report(model: FetchedModel, source: ScoringInput, result: scoring.ScoreResult) -> None:
    """The run's figures as a markdown artifact: rows read, scored, rejected by reason, files, speed."""
    create_markdown_artifact(key="batch-scoring", markdown=scoring_markdown(model, source, result),
                             description=f"{model.name} v{model.version} on {source.label}")
    tally = result.tally
    get_run_logger().info("scored %d of %d rows (%d rejected) in %.1f s into %s", tally.rows_scored, tally.rows_read,
                          tally.rows_rejected, result.seconds, result.output_path)


def scoring_markdown(model: FetchedModel, source: ScoringInput, result: scoring.ScoreResult) -> str:
    tally = result.tally
    rows = [
        ("model", f"`{model.name}` version **{model.version}** (`{model.uri}`)"),
        ("input", f"`{source.label}`"),
        ("rows read", f"{tally.rows_read:,}"),
        ("rows scored", f"{tally.rows_scored:,}"),
        ("rows rejected", f"{tally.rows_rejected:,}"),
        ("output", f"`{result.output_path}`"),
        ("rejects", f"`{result.rejects_path}`"),
        ("row keys", ", ".join(f"`{k}`" for k in result.key_columns)),
        ("chunks", f"{result.chunks} of up to {result.chunk_rows:,} rows"),
        ("duration (read, screen, predict, write)", f"{result.seconds:.2f} s"),
        ("rows/s", f"{result.rows_per_second:,.0f}"),
    ]
    table = "\n".join(f"| {name} | {value} |" for name, value in rows)
    reasons = "\n".join(f"| `{reason}` | {count:,} |" for reason, count in tally.rejected_by_reason.items()) or "| none | 0 |"
    return (
        f"# Batch scoring: {tally.rows_scored:,} rows scored, {tally.rows_rejected:,} rejected\n\n| | |\n|---|---|\n{table}\n\n"
        f"## Rejected rows by reason\n\nA row that breaks two rules counts under both.\n\n| reason | rows |\n|---|---:|\n{reasons}\n"
    )
