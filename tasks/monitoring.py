"""Monitoring tasks: the champion's reference window, a new window, both scored, Evidently drift, the event."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import mlflow
import pandas as pd
from prefect import task
from prefect.artifacts import create_link_artifact, create_table_artifact
from prefect.events import emit_event
from prefect.logging import get_run_logger
from pydantic import BaseModel, ConfigDict

from mlops import data as data_lib
from mlops import drift, modeling, registry
from mlops.config import Config
from mlops.evaluation import predict_outputs

DRIFT_EVENT = "mlops.drift.detected"


class Champion(BaseModel):
    model_config = ConfigDict(frozen=True)

    version: str
    data_window: str | None


class Windows(BaseModel):
    """The reference and current frames (inputs + champion predictions + labels), on disk."""

    model_config = ConfigDict(frozen=True)

    reference_path: Path
    current_path: Path
    reference_window: str
    current_window: str
    current_end: str | None  # ISO date: the end of the new window, for a retrain that includes it


@task(retries=3, retry_delay_seconds=[2, 5, 15])
def find_champion(config: Config) -> Champion | None:
    """The champion version and the training window its lineage records; None without a champion."""
    client = registry.connect(config)
    try:
        version = client.get_model_version_by_alias(config.tracking.model_name, registry.CHAMPION)
    except mlflow.exceptions.MlflowException:
        return None
    return Champion(version=str(version.version), data_window=version.tags.get("data_window"))


def _window(full: pd.DataFrame, config: Config, label: str | None) -> tuple[pd.DataFrame, data_lib.WindowBounds]:
    if label is None or label == "all":
        bounds = data_lib.WindowBounds(None, None)
    else:
        start, end = label.split("..")
        bounds = data_lib.WindowBounds(pd.Timestamp(start, tz="UTC"), pd.Timestamp(end, tz="UTC"))
    return data_lib.cut_window(full, config.dataset.time_column, bounds), bounds


@task(retries=2, retry_delay_seconds=[2, 10])
def extract_windows(config: Config, champion: Champion, as_of: str | None, months: int, input_path: str | None,
                    workdir: Path) -> Windows:
    """The champion's training window and the new window (or a file of new data), scored by the champion."""
    full = data_lib.load_source(config)
    reference, reference_bounds = _window(full, config, champion.data_window)
    if input_path:
        current = pd.read_csv(input_path) if input_path.endswith(".csv") else pd.read_parquet(input_path)
        current_bounds, current_label = data_lib.WindowBounds(None, None), Path(input_path).name
    else:
        current_bounds = data_lib.window_bounds(full, config.dataset.time_column, as_of, months)
        current = data_lib.cut_window(full, config.dataset.time_column, current_bounds)
        current_label = current_bounds.label()
    registry.connect(config)
    model = mlflow.sklearn.load_model(f"models:/{config.tracking.model_name}/{champion.version}")
    workdir.mkdir(parents=True, exist_ok=True)
    paths = {}
    for name, frame in [("reference", reference), ("current", current)]:
        outputs = predict_outputs(model, modeling.features_and_target(frame, config)[0], config.task)
        score = pd.Series(outputs[:, -1] if config.task == "binary" else outputs.max(axis=1) if outputs.ndim > 1 else outputs)
        paths[name] = workdir / f"{name}.parquet"
        drift.monitored_frame(frame, score, config).to_parquet(paths[name])
    get_run_logger().info("reference %s: %d rows; current %s: %d rows", reference_bounds.label(), len(reference),
                          current_label, len(current))
    end = current_bounds.end.date().isoformat() if current_bounds.end is not None else None
    return Windows(reference_path=paths["reference"], current_path=paths["current"],
                   reference_window=reference_bounds.label(), current_window=current_label, current_end=end)


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
    get_run_logger().info("drift share %.2f (threshold %.2f): %s", result.drift_share, result.threshold_share,
                          result.drifted_columns or "no column drifted")
    return result, html


@task(retries=3, retry_delay_seconds=[2, 5, 15])
def log_drift_report(config: Config, windows: Windows, result: drift.DriftResult, html: Path, champion: Champion) -> str:
    """Keep the Evidently HTML report and the numbers in an MLflow monitoring run; returns the report's URI."""
    client = registry.connect(config)
    experiment = f"{config.tracking.experiment}-monitoring"
    found = client.get_experiment_by_name(experiment)
    experiment_id = found.experiment_id if found else client.create_experiment(experiment)
    run = client.create_run(experiment_id, run_name=f"drift-{windows.current_window}",
                            tags={"champion_version": champion.version, "current_window": windows.current_window,
                                  "reference_window": windows.reference_window})
    run_id = run.info.run_id
    client.log_metric(run_id, "drift_share", result.drift_share)
    for column in result.columns:
        client.log_metric(run_id, f"drift_score.{column.column}", column.score)
    client.log_dict(run_id, result.model_dump(), "drift/result.json")
    client.log_artifact(run_id, str(html), "drift")
    client.set_terminated(run_id)
    url = registry.run_url(config, run_id)
    if url:
        create_link_artifact(key="drift-report", link=url, link_text="Evidently drift report (MLflow run, artifacts/drift)")
    return f"{run.info.artifact_uri}/drift/{html.name}"


@task
def emit_drift_detected(config: Config, windows: Windows, result: drift.DriftResult, report_uri: str,
                        champion: Champion, months: int) -> dict[str, Any]:
    """Emit `mlops.drift.detected`; the retrain deployment's trigger turns it into a CT run (debounced)."""
    payload = {
        "dataset": config.dataset.name,
        "window": windows.current_window,
        "as_of": windows.current_end,
        "window_months": months,
        "drift_share": round(result.drift_share, 4),
        "drifted_columns": result.drifted_columns,
        "report": report_uri,
        "champion_version": champion.version,
    }
    emit_event(event=DRIFT_EVENT, resource={"prefect.resource.id": f"mlops.dataset.{config.dataset.name}"},
               related=[{"prefect.resource.id": f"mlflow.model.{config.tracking.model_name}.{champion.version}",
                         "prefect.resource.role": "model"}],
               payload=payload)
    return payload


def summary_markdown(windows: Windows, result: drift.DriftResult, champion: Champion, emitted: bool) -> str:
    verdict = f"**Drift detected**: `{DRIFT_EVENT}` emitted" if emitted else "No drift: nothing to do"
    rows = "\n".join(f"| {c.column} | {c.method} | {c.score:.3f} | {c.threshold:.3f} | {'**drifted**' if c.drifted else 'ok'} |"
                     for c in result.columns)
    return (f"# Drift monitoring: {windows.current_window}\n\n{verdict}.\n\n"
            f"- reference: champion v{champion.version}'s training window {windows.reference_window} ({result.reference_rows} rows sampled)\n"
            f"- current: {windows.current_window} ({result.current_rows} rows sampled)\n"
            f"- drifted columns: {result.drift_share:.0%} (threshold {result.threshold_share:.0%})\n\n"
            f"| column | method | score | threshold | verdict |\n|---|---|---:|---:|---|\n{rows}\n")
