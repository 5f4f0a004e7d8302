"""Read the configured data source, whole or one window of it. The one place data is loaded."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from mlops.config import Config, FileSource, PythonSource, SqlSource
from mlops.domain.data import order_by_time, select_columns
from mlops.domain.validation import DataValidationError, Violation
from mlops.domain.window import Window, window_for


def load_source(config: Config) -> pd.DataFrame:
    """The whole configured source as a frame, its time column (if any) parsed and in order."""
    source = config.dataset.source
    if isinstance(source, FileSource):
        df = read_file(source.path, source.kind)
    elif isinstance(source, SqlSource):
        import sqlalchemy

        engine = sqlalchemy.create_engine(source.url)
        try:
            df = pd.read_sql_table(source.table, engine)
        finally:
            engine.dispose()
    elif isinstance(source, PythonSource):
        df = load_with(config)
    else:  # pragma: no cover - the config model admits no other kind
        raise TypeError(f"unknown source {source!r}")
    return _ordered(df, config.dataset.time_column)


def load_query(url: str, query: str) -> pd.DataFrame:
    """The rows a SQL query returns (late labels from a warehouse: `mlops labels --sql`)."""
    import sqlalchemy

    engine = sqlalchemy.create_engine(url)
    try:
        with engine.connect() as connection:
            return pd.read_sql_query(sqlalchemy.text(query), connection)
    finally:
        engine.dispose()


def load_with(config: Config) -> pd.DataFrame:
    """The frame the use case's own `dataset.source.loader` returns; anything else is a clear error."""
    path = config.import_paths()["dataset.source.loader"]
    try:
        df = config.resolve("dataset.source.loader")()
    except Exception as exc:
        raise DataValidationError(
            [Violation(column="*", rule="loader_failed", detail=f"{path}() raised {type(exc).__name__}: {exc}"[:500])]
        ) from exc
    if not isinstance(df, pd.DataFrame):
        raise DataValidationError(
            [
                Violation(
                    column="*", rule="loader_failed", detail=f"{path}() returned a {type(df).__name__}, not a DataFrame"
                )
            ]
        )
    return df


def file_problems(path: Path, kind: str) -> list[Violation]:
    """What makes a file unusable before its rows are read: empty, or (CSV) cut short mid-line."""
    size = Path(path).stat().st_size
    if size == 0:
        return [Violation(column="*", rule="empty_file", detail=f"{path} has no bytes")]
    if kind == "csv" and not str(path).lower().endswith(".gz"):
        with open(path, "rb") as handle:
            handle.seek(size - 1)
            if handle.read(1) not in (b"\n", b"\r"):
                return [
                    Violation(
                        column="*",
                        rule="truncated_file",
                        detail=f"{path}: the last line has no line end, so the file may be cut short",
                    )
                ]
    return []


def read_file(path: Path, kind: str) -> pd.DataFrame:
    """A CSV or Parquet file; one that cannot be read as such is a validation failure naming the file."""
    problems = file_problems(path, kind)
    if problems:
        raise DataValidationError(problems)
    try:
        return pd.read_csv(path) if kind == "csv" else pd.read_parquet(path)
    except FileNotFoundError:
        raise
    except (ValueError, OSError, pd.errors.ParserError, pd.errors.EmptyDataError) as exc:  # empty, truncated, not CSV
        raise DataValidationError(
            [Violation(column="*", rule="unreadable_file", detail=f"{path}: {type(exc).__name__}: {exc}"[:500])]
        ) from None


def _ordered(df: pd.DataFrame, time_column: str | None) -> pd.DataFrame:
    try:
        return order_by_time(df, time_column)
    except (ValueError, TypeError, OverflowError) as exc:
        raise DataValidationError(
            [Violation(column=str(time_column), rule="unparsable_time", detail=str(exc)[:300])]
        ) from None


@dataclass(frozen=True)
class WindowFrame:
    """The rows of one window of the source, and the window they came from."""

    frame: pd.DataFrame
    window: Window
    source_rows: int


def load_window(
    config: Config,
    window: Window | None = None,
    *,
    as_of: str | None = None,
    months: int | None = None,
    declared_only: bool = True,
) -> WindowFrame:
    """One window of the source: `window` itself, or the `months` before `as_of` (default: the config's).

    `declared_only` keeps the config's declared columns (keys, time, features, target) and no others.
    """
    full = load_source(config)
    if window is None:
        as_of = as_of if as_of is not None else config.window.as_of
        window = window_for(full, config.dataset.time_column, as_of, months or config.window.months)
    frame = window.cut(full, config.dataset.time_column)
    return WindowFrame(select_columns(frame, config) if declared_only else frame, window, len(full))


def load_labelled_window(config: Config, label: str | None) -> WindowFrame:
    """The window a `data_window` lineage tag names; without a tag (a hand-registered model), the config's."""
    return load_window(config, Window.parse(label)) if label else load_window(config)
