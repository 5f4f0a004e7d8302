"""Feedback: late labels joined to the traffic production answered; realized and estimated performance; a
degraded champion fires retraining."""

from __future__ import annotations

from typing import Any

from prefect import flow
from prefect.artifacts import create_markdown_artifact

from mlops import render
from mlops.config import load_config
from tasks.feedback import (
    DEGRADED_EVENT,
    ingest_labels,
    judge_production,
    measure,
    publish_feedback,
    read_labels,
)
from tasks.runs import UseCase, require_servers, run_config, run_name, tag_this_run


def _run_name() -> str:
    return run_name("labels", run_config().name)


@flow(name="feedback", flow_run_name=_run_name)
def feedback(
    path: str | None = None,
    sql: str | None = None,
    sql_url: str | None = None,
    use_case: UseCase | None = None,  # type: ignore[valid-type]
) -> dict[str, Any]:
    """Ingest a batch of late labels and measure what production realized.

    Each label names a captured request: by `request_id` (the `X-Request-ID` the service answered; `row` for
    a request of several rows) or by the use case's `dataset.key_columns`. Labels with an unknown id, twice in
    the batch, already ingested, or of a value the model does not predict are left out and counted by reason;
    nothing kept before changes. Then every kept label gives the realized metric per version, per day and per
    segment, next to the metric estimated from the served probabilities (CBPE) where the version's calibration
    allows, as artifacts and in an MLflow monitoring run. When the champion's realized metric on production is
    past its floor (`feedback.floor`, else the gates' floor) over `feedback.min_rows` labels, the flow emits
    `mlops.performance.degraded`, whose trigger retrains the use case (debounced, as drift is).

    Args:
        path: A CSV or Parquet file of labels (the target column and the request's id or key columns).
        sql: Or a SQL query returning them.
        sql_url: The database the query runs on; default: the use case's SQL source.
        use_case: Whose traffic the labels belong to (a folder `usecases/<name>/`); default: the stack's.
    """
    config = load_config(use_case=use_case)
    require_servers(config)
    tag_this_run([f"use-case:{config.name}"])
    labels = read_labels(config, path, sql, sql_url)
    ingested = ingest_labels(config, labels)
    measured = measure(config, ingested.classes)
    run_id = publish_feedback(config, ingested, measured)
    event = judge_production(config, measured)
    create_markdown_artifact(
        key="feedback-summary",
        markdown=render.feedback_markdown(config, ingested, measured, event, DEGRADED_EVENT),
    )
    return {
        "received": ingested.received,
        "accepted": ingested.accepted,
        "problems": [p.model_dump() for p in ingested.problems],
        "realized": [r.model_dump() for r in measured.realized if r.scope == "all"],
        "estimable": measured.estimable,
        "mlflow_run_id": run_id,
        "event": event,
    }
