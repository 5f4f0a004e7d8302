"""Evidently reports, and one typed way to read their numbers by key (never by position)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd

from mlops.config import Config


def data_definition(config: Config, columns: list[str]) -> Any:
    from evidently import DataDefinition

    ds = config.dataset
    return DataDefinition(
        numerical_columns=[c for c in ds.numeric if c in columns],
        categorical_columns=[c for c in ds.categorical if c in columns],
    )


def data_quality_report(
    current: pd.DataFrame, config: Config, html_path: Path, reference: pd.DataFrame | None = None
) -> dict[str, Any]:
    """Evidently's data summary of the model's input columns, saved as HTML; returns the metrics by name."""
    from evidently import Dataset, Report
    from evidently.presets import DataSummaryPreset

    columns = [c for c in config.dataset.features if c in current.columns]
    definition = data_definition(config, columns)
    snapshot = Report([DataSummaryPreset()]).run(
        Dataset.from_pandas(current[columns], data_definition=definition),
        Dataset.from_pandas(reference[columns], data_definition=definition) if reference is not None else None,
    )
    html_path.parent.mkdir(parents=True, exist_ok=True)
    snapshot.save_html(str(html_path))
    return metrics_by_name(snapshot.dict())


def metrics_by_name(report: dict[str, Any]) -> dict[str, Any]:
    """An Evidently snapshot's metric values keyed by metric name, e.g. "RowCount()"."""
    return {m["metric_name"]: m["value"] for m in report.get("metrics", [])}
