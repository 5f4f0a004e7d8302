"""The dataset as frames: time order, the declared columns, a content hash. Pure."""

from __future__ import annotations

import hashlib

import pandas as pd

from mlops.config import Config


def order_by_time(df: pd.DataFrame, time_column: str | None) -> pd.DataFrame:
    """The time column parsed as UTC and the rows in time order (unchanged without a time column)."""
    if not time_column or time_column not in df.columns:
        return df
    out = df.assign(**{time_column: pd.to_datetime(df[time_column], utc=True)})
    return out.sort_values(time_column, kind="stable").reset_index(drop=True)


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
