"""Monitoring tasks: the champion's reference window, a new window, both scored, Evidently drift, the event."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd
from prefect import task
from prefect.artifacts import create_link_artifact, create_table_artifact
from prefect.events import emit_event
from prefect.logging import get_run_logger

from mlops.adapters import registry, sources
from mlops.config import CAPTURED_AT, USE_CASE_LABEL, Config, captured_column
from mlops.domain import drift
from mlops.domain.record import Record
from mlops.domain.window import Window, window_for
from mlops.serving.capture import count_captured, read_captured
from tasks.retries import IO_RETRIES

DRIFT_EVENT = "mlops.drift.detected"


class Windows(Record):
    """The reference and current frames (inputs + champion predictions + labels), on disk."""

    reference_path: Path
    current_path: Path
    reference_window: str
    current_window: str
    current_end: str | None  # ISO date: the end of the new window, for a retrain that includes it
    reference_rows: int
    overlap: str = ""  # what was left out of the reference because the current window holds it too


@task(**IO_RETRIES)
def find_champion(config: Config) -> registry.VersionRef | None:
    """The champion version and its lineage; None before the first promotion (a registry error raises)."""
    return registry.champion(registry.connect(config), config.tracking.model_name)


def _since(months: int) -> Any:
    return (pd.Timestamp.now(tz="UTC") - pd.DateOffset(months=months)).to_pydatetime()


def captured_traffic(config: Config, months: int) -> pd.DataFrame:
    """What production answered over the last `months` months (by capture time), one row per scored row."""
    return read_captured(config.capture_dir, config.name, environment="production", since=_since(months))


def served_recently(config: Config, months: int) -> bool:
    """Whether production answered anything in the last `months` months (counted, not parsed)."""
    return count_captured(config.capture_dir, config.name, environment="production", since=_since(months)) > 0


@task(**IO_RETRIES)
def extract_windows(
    config: Config,
    champion: registry.VersionRef,
    as_of: str | None,
    months: int,
    input_path: str | None,
    workdir: Path,
    captured: bool = False,
) -> Windows:
    """The champion's training window and the new window (a window of the source, a file of new data, or with
    `captured` the traffic production answered in the last `months` months), scored by the champion."""
    full = sources.load_source(config)
    time_column = config.dataset.time_column
    reference_bounds = Window.parse(champion.data_window) if champion.data_window else Window.everything()
    reference = reference_bounds.cut(full, time_column)
    if captured:
        traffic = captured_traffic(config, months)
        if traffic.empty:
            raise ValueError(
                f"no production traffic of {config.name} captured in the last {months} month(s) under "
                f"{config.capture_dir}: check a window of the source instead (input: source)"
            )
        inputs = {captured_column(c): c for c in config.dataset.features if captured_column(c) in traffic}
        current = traffic[list(inputs)].rename(columns=inputs)  # the model's inputs as received, by their names
        current_bounds = Window.everything()
        times = pd.to_datetime(traffic[CAPTURED_AT], utc=True)
        current_label = f"production traffic {times.min():%Y-%m-%d}..{times.max():%Y-%m-%d}"
    elif input_path:
        current = pd.read_csv(input_path) if input_path.endswith(".csv") else pd.read_parquet(input_path)
        current_bounds, current_label = Window.everything(), Path(input_path).name
    else:
        current_bounds = window_for(full, time_column, as_of, months)
        current = current_bounds.cut(full, time_column)
        current_label = current_bounds.label()
    reference, overlap = drift.reference_without(reference, reference_bounds, current_bounds, config)
    if overlap:
        get_run_logger().warning(overlap)
    registry.connect(config)
    model = registry.load_model(champion)
    workdir.mkdir(parents=True, exist_ok=True)
    paths = {}
    for name, frame in [("reference", reference), ("current", current)]:
        paths[name] = workdir / f"{name}.parquet"
        drift.scored_frame(model, frame, config).to_parquet(paths[name])  # an empty side is reported by the flow
    get_run_logger().info(
        "reference %s: %d rows; current %s: %d rows",
        reference_bounds.label(),
        len(reference),
        current_label,
        len(current),
    )
    end = current_bounds.end.date().isoformat() if current_bounds.end is not None else None
    return Windows(
        reference_path=paths["reference"],
        current_path=paths["current"],
        reference_window=reference_bounds.label(),
        current_window=current_label,
        current_end=end,
        reference_rows=len(reference),
        overlap=overlap,
    )


@task
def check_drift(config: Config, windows: Windows) -> tuple[drift.DriftResult, Path]:
    """Evidently drift of the new window against the reference; the numbers as a table artifact."""
    html = windows.current_path.with_name("drift_report.html")
    result = drift.compare(pd.read_parquet(windows.reference_path), pd.read_parquet(windows.current_path), config, html)
    create_table_artifact(
        key="drift-columns",
        table=[c.model_dump() for c in result.columns],
        description=f"{windows.current_window} vs {windows.reference_window}: {result.drift_share:.0%} of columns drifted",
    )
    get_run_logger().info(
        "drift share %.2f (threshold %.2f): %s",
        result.drift_share,
        result.threshold_share,
        result.drifted_columns or "no column drifted",
    )
    return result, html


@task(**IO_RETRIES)
def log_drift_report(
    config: Config, windows: Windows, result: drift.DriftResult, html: Path, champion: registry.VersionRef
) -> str:
    """Keep the Evidently HTML report and the numbers in an MLflow monitoring run; returns the report's URI."""
    client = registry.connect(config)
    experiment_id = registry.ensure_experiment(client, f"{config.tracking.experiment}-monitoring")
    run = client.create_run(
        experiment_id,
        run_name=f"drift-{windows.current_window}",
        tags={
            "champion_version": champion.version,
            "current_window": windows.current_window,
            "reference_window": windows.reference_window,
        },
    )
    run_id = run.info.run_id
    client.log_metric(run_id, "drift_share", result.drift_share)
    for column in result.columns:
        client.log_metric(run_id, f"drift_score.{column.column}", column.score)
    client.log_dict(run_id, result.model_dump(), "drift/result.json")
    client.log_artifact(run_id, str(html), "drift")
    client.set_terminated(run_id)
    url = registry.run_url(config, run_id)
    if url:
        create_link_artifact(
            key="drift-report", link=url, link_text="Evidently drift report (MLflow run, artifacts/drift)"
        )
    return f"{run.info.artifact_uri}/drift/{html.name}"


@task
def emit_drift_detected(
    config: Config,
    windows: Windows,
    result: drift.DriftResult,
    report_uri: str,
    champion: registry.VersionRef,
    months: int,
) -> dict[str, Any]:
    """Emit `mlops.drift.detected`; the retrain deployment's trigger turns it into a CT run (debounced)."""
    payload = {
        "dataset": config.dataset.name,
        "use_case": config.use_case,  # the retrain trigger's `use_case` parameter: None for the stack's default file
        "window": windows.current_window,
        "as_of": windows.current_end,
        "window_months": months,
        "drift_share": round(result.drift_share, 4),
        "drifted_columns": result.drifted_columns,
        "report": report_uri,
        "champion_version": champion.version,
    }
    emit_about_champion(config, DRIFT_EVENT, champion.version, payload)
    return payload


def emit_about_champion(config: Config, event: str, champion: str, payload: dict[str, Any]) -> None:
    """A monitoring event about the use case's data and its champion: resource `mlops.dataset.<name>` labelled
    with the use case (what the retrain triggers match and debounce by), the champion version related."""
    emit_event(
        event=event,
        resource={"prefect.resource.id": f"mlops.dataset.{config.dataset.name}", USE_CASE_LABEL: config.name},
        related=[
            {
                "prefect.resource.id": f"mlflow.model.{config.tracking.model_name}.{champion}",
                "prefect.resource.role": "model",
            }
        ],
        payload=payload,
    )
