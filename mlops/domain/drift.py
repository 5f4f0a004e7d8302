"""Drift: a new window of data against the champion's training window, with Evidently. No Prefect here.

Statistical choices (see docs/drift.md): Evidently picks a test per column from its type and the
sample size; above 1,000 rows that is the normed Wasserstein distance for numeric columns and the
Jensen-Shannon distance for categorical ones, both with threshold 0.1. These are effect sizes, not
p-values, so they do not flag every column once samples are large. Each side is sampled (seeded)
to at most `drift.sample_rows` rows, which bounds the cost for a year of data. The model's
prediction is one more monitored column (prediction drift); the target is too when the new window
has labels (target drift). The window drifts when the share of drifted columns reaches
`drift.drift_share`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd

from mlops.config import Config
from mlops.domain.evaluation import predict_outputs
from mlops.domain.record import Record
from mlops.domain.window import Window

PREDICTION = "prediction"


class ColumnDrift(Record):
    column: str
    method: str
    score: float
    threshold: float
    drifted: bool


class DriftResult(Record):
    """The numbers that decide whether a window drifted from the reference."""

    reference_rows: int
    current_rows: int
    drift_share: float
    threshold_share: float
    columns: list[ColumnDrift]

    @property
    def drifted(self) -> bool:
        return self.drift_share >= self.threshold_share

    @property
    def drifted_columns(self) -> list[str]:
        return [c.column for c in self.columns if c.drifted]

    def column(self, name: str) -> ColumnDrift | None:
        return next((c for c in self.columns if c.column == name), None)


def sample(df: pd.DataFrame, max_rows: int | None, seed: int) -> pd.DataFrame:
    """At most `max_rows` rows, drawn without replacement with a fixed seed."""
    if max_rows is None or len(df) <= max_rows:
        return df
    return df.sample(n=max_rows, random_state=seed)


def monitored_frame(df: pd.DataFrame, predictions: pd.Series | None, config: Config) -> pd.DataFrame:
    """The model's input columns, plus the prediction and the target when they are present."""
    ds = config.dataset
    out = df[[c for c in ds.features if c in df.columns]].copy()
    if predictions is not None:
        out[PREDICTION] = predictions.to_numpy()
    if ds.target in df.columns and df[ds.target].notna().any():
        out[ds.target] = df[ds.target].to_numpy()
    return out


def scored_frame(model: Any, df: pd.DataFrame, config: Config) -> pd.DataFrame:
    """`monitored_frame` with `model`'s prediction: the positive class's probability, the top class's, or the value."""
    if df.empty:
        return monitored_frame(df, None, config)
    outputs = predict_outputs(model, df[config.dataset.features], config.task)
    score = outputs[:, -1] if config.task == "binary" else outputs.max(axis=1) if outputs.ndim > 1 else outputs
    return monitored_frame(df, pd.Series(score), config)


def reference_without(
    reference: pd.DataFrame, reference_window: Window, current: Window, config: Config
) -> tuple[pd.DataFrame, str]:
    """The reference rows outside the current window: new data is never compared with itself."""
    time_column = config.dataset.time_column
    if not current.bounded or not time_column or not reference_window.overlaps(current):
        return reference, ""
    inside = current.mask(reference, time_column)
    note = (
        f"{int(inside.sum())} reference row(s) inside the current window {current.label()} left out of the reference"
        if inside.any()
        else ""
    )
    return reference.loc[~inside].reset_index(drop=True), note


def compare(
    reference: pd.DataFrame, current: pd.DataFrame, config: Config, html_path: Path | None = None
) -> DriftResult:
    """Evidently's per-column drift of `current` against `reference` (frames from `monitored_frame`)."""
    from evidently import DataDefinition, Dataset, Report
    from evidently.metrics import ValueDrift

    settings = config.drift
    columns = [c for c in current.columns if c in reference.columns]
    reference = sample(reference[columns], settings.sample_rows, config.split.seed)
    current = sample(current[columns], settings.sample_rows, config.split.seed)
    categorical = [
        c
        for c in columns
        if c in config.dataset.categorical or (c == config.dataset.target and config.task != "regression")
    ]
    definition = DataDefinition(
        numerical_columns=[c for c in columns if c not in categorical], categorical_columns=categorical
    )
    # One ValueDrift per column, and the share computed here: DataDriftPreset would compute every
    # column's drift twice more (its count metric and its legacy table), tripling the time.
    metrics = [
        ValueDrift(
            column=c,
            method=settings.cat_method if c in categorical else settings.num_method,
            threshold=settings.threshold,
        )
        for c in columns
    ]
    snapshot = Report(metrics, include_tests=True).run(
        Dataset.from_pandas(current, data_definition=definition),
        Dataset.from_pandas(reference, data_definition=definition),
    )
    if html_path is not None:
        html_path.parent.mkdir(parents=True, exist_ok=True)
        snapshot.save_html(str(html_path))
    per_column = column_drifts(snapshot.dict())
    share = sum(c.drifted for c in per_column) / len(per_column) if per_column else 0.0
    return DriftResult(
        reference_rows=len(reference),
        current_rows=len(current),
        drift_share=share,
        threshold_share=settings.drift_share,
        columns=per_column,
    )


def column_drifts(report: dict[str, Any]) -> list[ColumnDrift]:
    """Per-column drift read by key from an Evidently snapshot: scores from metrics, verdicts from tests."""
    scores = {
        m["config"]["column"]: (m["config"]["method"], float(m["config"]["threshold"]), float(m["value"]))
        for m in report.get("metrics", [])
        if m["config"].get("type") == "evidently:metric_v2:ValueDrift"
    }
    verdicts = {
        t["metric_config"]["params"]["column"]: _status(t["status"]) == "FAIL"
        for t in report.get("tests", [])
        if t["metric_config"]["params"].get("type") == "evidently:metric_v2:ValueDrift"
    }
    return [
        ColumnDrift(column=column, method=method, threshold=threshold, score=score, drifted=verdicts[column])
        for column, (method, threshold, score) in scores.items()
    ]


def _status(status: Any) -> str:
    return getattr(status, "value", status)
