"""Data tasks: extract a window, validate it, split it, profile it. Each passes file paths on."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
from prefect import task
from prefect.artifacts import create_markdown_artifact
from prefect.logging import get_run_logger

from mlops import render
from mlops.adapters import sources
from mlops.config import Config
from mlops.domain import split as splitting
from mlops.domain import validation
from mlops.domain.data import content_hash
from mlops.domain.record import Record
from mlops.domain.reports import data_quality_report
from mlops.domain.window import Window, fitted_part
from tasks.retries import IO_RETRIES, retry_unless


class Extract(Record):
    path: Path
    rows: int
    data_hash: str
    window: str  # Window.label(): e.g. 2013-01-01..2013-04-01, or "all"


class Split(Record):
    train_path: Path
    test_path: Path
    train_rows: int
    test_rows: int
    training_window: str  # the part of the window the model is fitted on (lineage: what the champion has seen)


def _refuse(key: str, title: str, violations: list[validation.Violation]) -> None:
    create_markdown_artifact(
        key=key,
        markdown=render.violations_markdown(title, violations, "nothing was trained or registered."),
        description="Columns and rules the batch broke",
    )
    raise validation.DataValidationError(violations)


@task(**IO_RETRIES, retry_condition_fn=retry_unless(validation.DataValidationError))
def extract_window(config: Config, as_of: str | None, months: int, workdir: Path) -> Extract:
    """Read the source, cut the training window, keep the declared columns, write Parquet."""
    try:
        loaded = sources.load_window(config, as_of=as_of, months=months)
    except validation.DataValidationError as exc:  # a file that cannot be read, a time column that does not parse
        _refuse("data-validation", "Data validation failed: the source cannot be read", exc.violations)
    workdir.mkdir(parents=True, exist_ok=True)
    path = workdir / "window.parquet"
    loaded.frame.to_parquet(path)
    get_run_logger().info(
        "extracted %d of %d rows, window %s", len(loaded.frame), loaded.source_rows, loaded.window.label()
    )
    return Extract(
        path=path, rows=len(loaded.frame), data_hash=content_hash(loaded.frame), window=loaded.window.label()
    )


@task
def validate_data(config: Config, extract: Extract) -> int:
    """Check the window against the config, the contract file and the quality rules; fail with a report."""
    logger = get_run_logger()
    df = pd.read_parquet(extract.path)
    contract = validation.load_contract(config)
    if contract is None:
        logger.warning("no contract file at %s: checking against the config alone", config.dataset.contract_path)
    violations = validation.validate_frame(df, config, contract)
    if violations:
        _refuse("data-validation", f"Data validation failed: {extract.window}", violations)
    logger.info(
        "%d rows passed %s",
        len(df),
        f"the contract {config.dataset.contract_path.name}" if contract else "the config's schema",
    )
    return len(df)


@task
def split_data(config: Config, extract: Extract) -> Split:
    """Split into training and holdout (time-later, or seeded stratified) and check the split."""
    train, test = splitting.split_frame(pd.read_parquet(extract.path), config)
    violations = splitting.check_split(train, test, config)
    if violations:
        _refuse("split-validation", "Split validation failed", violations)
    train_path, test_path = extract.path.with_name("train.parquet"), extract.path.with_name("test.parquet")
    train.to_parquet(train_path)
    test.to_parquet(test_path)
    get_run_logger().info("split: %d training rows, %d holdout rows", len(train), len(test))
    time_column = config.dataset.time_column
    fitted = fitted_part(Window.parse(extract.window), test[time_column].min() if time_column else None)
    return Split(
        train_path=train_path,
        test_path=test_path,
        train_rows=len(train),
        test_rows=len(test),
        training_window=fitted.label(),
    )


@task
def profile_data(config: Config, split: Split) -> Path:
    """Evidently data-quality report of the holdout against the training data, kept as HTML."""
    html = split.train_path.with_name("data_quality.html")
    data_quality_report(pd.read_parquet(split.test_path), config, html, reference=pd.read_parquet(split.train_path))
    return html
