"""Data tasks: extract a window, validate it, split it, profile it. Each passes file paths on."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
from prefect import task
from prefect.artifacts import create_markdown_artifact
from prefect.logging import get_run_logger
from pydantic import BaseModel, ConfigDict

from mlops import data as data_lib
from mlops import validation
from mlops.config import Config
from mlops.reports import data_quality_report


class Extract(BaseModel):
    model_config = ConfigDict(frozen=True)

    path: Path
    rows: int
    data_hash: str
    window: str  # e.g. 2013-01-01..2013-04-01, or "all"
    window_start: str | None
    window_end: str | None


class Split(BaseModel):
    model_config = ConfigDict(frozen=True)

    train_path: Path
    test_path: Path
    train_rows: int
    test_rows: int


def _violations_markdown(title: str, violations: list[validation.Violation]) -> str:
    rows = "\n".join(f"| `{v.column}` | {v.rule} | {v.detail} |" for v in violations)
    return f"# {title}\n\n{len(violations)} violation(s); nothing was trained or registered.\n\n| column | rule | detail |\n|---|---|---|\n{rows}\n"


@task(retries=2, retry_delay_seconds=[2, 10])
def extract_window(config: Config, as_of: str | None, months: int, workdir: Path) -> Extract:
    """Read the source, cut the training window, keep the declared columns, write Parquet."""
    logger = get_run_logger()
    full = data_lib.load_source(config)
    bounds = data_lib.window_bounds(full, config.dataset.time_column, as_of, months)
    df = data_lib.select_columns(data_lib.cut_window(full, config.dataset.time_column, bounds), config)
    workdir.mkdir(parents=True, exist_ok=True)
    path = workdir / "window.parquet"
    df.to_parquet(path)
    logger.info("extracted %d of %d rows, window %s", len(df), len(full), bounds.label())
    return Extract(
        path=path,
        rows=len(df),
        data_hash=data_lib.content_hash(df),
        window=bounds.label(),
        window_start=bounds.start.isoformat() if bounds.start is not None else None,
        window_end=bounds.end.isoformat() if bounds.end is not None else None,
    )


@task
def validate_data(config: Config, extract: Extract) -> int:
    """Check the window against the config, the contract file and the quality rules; fail with a report."""
    logger = get_run_logger()
    df = pd.read_parquet(extract.path)
    contract_path = config.dataset.contract_path
    contract = validation.Contract.load(contract_path) if contract_path.exists() else None
    if contract is None:
        logger.warning("no contract file at %s: checking against the config alone", contract_path)
    violations = validation.validate_frame(df, config, contract)
    if violations:
        create_markdown_artifact(
            key="data-validation", markdown=_violations_markdown(f"Data validation failed: {extract.window}", violations),
            description="Columns and rules the batch broke",
        )
        raise validation.DataValidationError(violations)
    logger.info("%d rows passed %s", len(df), f"the contract {contract_path.name}" if contract else "the config's schema")
    return len(df)


@task
def split_data(config: Config, extract: Extract) -> Split:
    """Split into training and holdout (time-later, or seeded stratified) and check the split."""
    df = pd.read_parquet(extract.path)
    train, test = validation.split_frame(df, config)
    violations = validation.check_split(train, test, config)
    if violations:
        create_markdown_artifact(key="split-validation", markdown=_violations_markdown("Split validation failed", violations))
        raise validation.DataValidationError(violations)
    train_path, test_path = extract.path.with_name("train.parquet"), extract.path.with_name("test.parquet")
    train.to_parquet(train_path)
    test.to_parquet(test_path)
    get_run_logger().info("split: %d training rows, %d holdout rows", len(train), len(test))
    return Split(train_path=train_path, test_path=test_path, train_rows=len(train), test_rows=len(test))


@task
def profile_data(config: Config, split: Split) -> Path:
    """Evidently data-quality report of the holdout against the training data, kept as HTML."""
    html = split.train_path.with_name("data_quality.html")
    data_quality_report(pd.read_parquet(split.test_path), config, html, reference=pd.read_parquet(split.train_path))
    return html
