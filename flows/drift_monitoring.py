"""Drift monitoring: a new window against the champion's training window; drift fires retraining."""

from __future__ import annotations

import shutil
from datetime import date
from typing import Any, Literal

from prefect import flow, runtime
from prefect.artifacts import create_markdown_artifact

from mlops import render
from mlops.config import load_config
from tasks.monitoring import (
    DRIFT_EVENT,
    check_drift,
    emit_drift_detected,
    extract_windows,
    find_champion,
    log_drift_report,
    served_recently,
)
from tasks.registry import config_of_version
from tasks.runs import UseCase, require_servers, run_config, run_name, run_parameter, tag_this_run


def _run_name() -> str:
    return run_name("drift", run_config().name, run_parameter("as_of") or run_parameter("input_path") or "latest")


@flow(name="drift-monitoring", flow_run_name=_run_name)
def drift_monitoring(
    as_of: date | None = None,
    window_months: int | None = None,
    input_path: str | None = None,
    use_case: UseCase | None = None,  # type: ignore[valid-type]
    input: Literal["auto", "source", "captured"] = "auto",
) -> dict[str, Any]:
    """Compare new data with the champion's training data and emit `mlops.drift.detected` when it drifted.

    The new window is scored by the champion, then Evidently compares each input column, the
    prediction and (when labels are present) the target with the champion's training window, found
    through its `data_window` lineage tag; reference rows that fall inside the new window are left
    out, so new data is never compared with itself. The HTML report is kept in an MLflow monitoring run and
    linked from this run; the per-column numbers are a table artifact. When the share of drifted
    columns reaches `drift.drift_share`, the event's trigger starts `continuous-training/retrain` on a
    window that ends with the new data (several events within the trigger's period start one run).

    Args:
        as_of: End of the new window (exclusive). Default: just after the latest data.
        window_months: Length of the new window. Default: `drift.window_months` in the config.
        input_path: A CSV or Parquet file of new data to check instead of a window of the source.
        use_case: Whose data and champion (a folder `usecases/<name>/`); default: the stack's. Its drift event
            names it, so the retraining it starts is that use case's.
        input: Where the new window comes from: `captured`, the traffic production answered in the last
            `window_months` months (what the model actually saw, mlops/serving/capture.py); `source`, a window of
            the data source; `auto` (the default): captured traffic when production answered some in that time
            and neither `as_of` nor `input_path` is given, else the source.
    """
    config = load_config(use_case=use_case)
    months = window_months or config.drift.window_months
    require_servers(config)
    tag_this_run([f"use-case:{config.name}"])
    champion = find_champion(config)
    if champion is None:
        create_markdown_artifact(
            key="drift-summary", markdown="# Drift monitoring\n\nNo champion yet: nothing to compare with."
        )
        return {"drifted": False, "reason": "no champion"}
    # The champion's features and data, as it was trained.
    config = config_of_version(config, champion.run_id, f"champion v{champion.version}")
    workdir = config.state_dir / "runs" / str(runtime.flow_run.id)
    captured = input == "captured" or (
        input == "auto" and not as_of and not input_path and served_recently(config, months)
    )
    windows = extract_windows(
        config, champion, as_of.isoformat() if as_of else None, months, input_path, workdir, captured
    )
    if windows.reference_rows == 0:
        create_markdown_artifact(
            key="drift-summary",
            markdown=f"# Drift monitoring: {windows.current_window}\n\n"
            f"Nothing to compare with: {windows.overlap or 'the reference window is empty'}.",
        )
        shutil.rmtree(workdir, ignore_errors=True)
        return {"drifted": False, "reason": "empty reference", "window": windows.current_window}
    result, html = check_drift(config, windows)
    report_uri = log_drift_report(config, windows, result, html, champion)
    event = emit_drift_detected(config, windows, result, report_uri, champion, months) if result.drifted else None
    create_markdown_artifact(
        key="drift-summary",
        markdown=render.drift_markdown(
            windows.current_window,
            windows.reference_window,
            result,
            champion.version,
            event is not None,
            DRIFT_EVENT,
            windows.overlap,
        ),
    )
    shutil.rmtree(workdir, ignore_errors=True)
    return {
        "drifted": result.drifted,
        "drift_share": result.drift_share,
        "drifted_columns": result.drifted_columns,
        "window": windows.current_window,
        "report": report_uri,
        "event": event,
    }
