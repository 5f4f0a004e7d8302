"""The data window: which rows of a time-ordered dataset a step uses, and its lineage label.

One type owns the idea. CT records a model's window as the `data_window` tag (`Window.label()`:
`"2013-01-01..2013-04-01"`, or `"all"` without a time column) and the part of it the model was
fitted on, before the holdout, as `training_window`; drift monitoring, CD, CI and batch scoring
read them back with `Window.parse`. Windows are half-open, `[start, end)`, in UTC.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date
from typing import Literal

import pandas as pd

ALL = "all"
_SEPARATOR = ".."
_ISO_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}([ T].*)?$")


LATEST = "latest"  # as_of: the months that end with the newest complete month of the data
AsOf = date | Literal["latest"] | None  # a flow's `as_of`: a date, "latest", or None for the config's `window.as_of`


def resolve_as_of(as_of: date | str | None, default: str | None) -> str | None:
    """A flow's `as_of` as the loaders take it: an ISO date, "latest", or `default` when not given."""
    return as_of.isoformat() if isinstance(as_of, date) else (as_of or default)


class WindowError(ValueError):
    """A window label or bound that cannot be read."""


def _utc(value: str | pd.Timestamp) -> pd.Timestamp:
    if isinstance(value, str) and not _ISO_DATE.match(value):
        raise WindowError(f"not a date: {value!r} (expected YYYY-MM-DD)")
    try:
        stamp = pd.Timestamp(value)
    except (ValueError, TypeError) as exc:
        raise WindowError(f"not a date: {value!r}") from exc
    return stamp.tz_localize("UTC") if stamp.tzinfo is None else stamp.tz_convert("UTC")


@dataclass(frozen=True)
class Window:
    """Rows with `start <= time < end`; both None means every row (no time column)."""

    start: pd.Timestamp | None = None
    end: pd.Timestamp | None = None

    @classmethod
    def everything(cls) -> Window:
        return cls(None, None)

    @classmethod
    def parse(cls, label: str) -> Window:
        """The window a `label()` describes: `"all"` or `"<start>..<end>"` (ISO dates)."""
        if label == ALL:
            return cls.everything()
        start, sep, end = label.partition(_SEPARATOR)
        if not sep or not start or not end:
            raise WindowError(f"a window label is 'all' or '<start>..<end>', got {label!r}")
        return cls(_utc(start), _utc(end))

    @classmethod
    def ending(cls, as_of: str | pd.Timestamp, months: int) -> Window:
        """The `months` before `as_of` (exclusive)."""
        end = _utc(as_of)
        return cls(end - pd.DateOffset(months=months), end)

    @property
    def bounded(self) -> bool:
        return self.start is not None

    def label(self) -> str:
        """`"all"`, or `"<start>..<end>"` as dates (with the time of day when a bound is not at midnight)."""
        if not self.bounded:
            return ALL
        return f"{_show(self.start)}{_SEPARATOR}{_show(self.end)}"

    def mask(self, df: pd.DataFrame, time_column: str | None) -> pd.Series:
        """True for the rows inside the window (every row when unbounded or without a time column)."""
        if not time_column or not self.bounded:
            return pd.Series(True, index=df.index)
        times = df[time_column]
        return (times >= self.start) & (times < self.end)

    def cut(self, df: pd.DataFrame, time_column: str | None) -> pd.DataFrame:
        """The rows inside the window, re-indexed from 0."""
        return df.loc[self.mask(df, time_column)].reset_index(drop=True)

    def overlaps(self, other: Window) -> bool:
        """True when the two windows share any instant (an unbounded window overlaps everything)."""
        if not self.bounded or not other.bounded:
            return True
        assert self.start is not None and self.end is not None, "a bounded window has both bounds"
        assert other.start is not None and other.end is not None, "a bounded window has both bounds"
        return self.start < other.end and other.start < self.end


def _show(stamp: pd.Timestamp) -> str:
    return f"{stamp:%Y-%m-%d}" if stamp == stamp.normalize() else f"{stamp:%Y-%m-%dT%H:%M:%S}"


def fitted_part(window: Window, first_held_out: pd.Timestamp | None) -> Window:
    """The part of `window` before its first held-out row: the rows a model was fitted on (lineage)."""
    if not window.bounded or first_held_out is None:
        return window
    return Window(window.start, min(window.end, _utc(first_held_out)))


def window_for(df: pd.DataFrame, time_column: str | None, as_of: str | None, months: int) -> Window:
    """The window of `months` ending at `as_of`, or just after the latest row when `as_of` is None, or
    with the newest complete month when `as_of` is "latest" (what a scheduled run asks for)."""
    if not time_column:
        return Window.everything()
    if as_of == LATEST:
        return Window.ending(latest_complete_month_end(_utc(df[time_column].max())), months)
    if as_of:
        return Window.ending(as_of, months)
    return Window.ending(df[time_column].max() + pd.Timedelta(seconds=1), months)


def month_start(value: str | pd.Timestamp) -> pd.Timestamp:
    """The first instant (UTC) of the month `value` falls in."""
    return _utc(value).normalize().replace(day=1)


def latest_complete_month_end(newest: pd.Timestamp) -> pd.Timestamp:
    """The first day after the newest complete month: the newest row's month counts once a row is on its last day."""
    month_start = newest.normalize().replace(day=1)
    last_day = month_start + pd.DateOffset(months=1) - pd.Timedelta(days=1)
    return month_start + pd.DateOffset(months=1) if newest.normalize() >= last_day else month_start
