"""Feedback tasks: read a batch of late labels, keep what joins the captured traffic, measure, publish, alert."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pandas as pd
from prefect import task
from prefect.artifacts import create_link_artifact, create_table_artifact
from prefect.logging import get_run_logger

from mlops.adapters import registry, sources
from mlops.config import Config
from mlops.domain import feedback
from mlops.domain.record import Record
from mlops.domain.scoring import input_format
from mlops.serving.capture import read_captured
from tasks.monitoring import emit_about_champion
from tasks.retries import IO_RETRIES, retry_unless

DEGRADED_EVENT = "mlops.performance.degraded"
LABELS_DIR = "labels"  # under the state dir: the ingested batches of each use case, never rewritten
PRODUCTION = "production"


class Ingested(Record):
    batch: str
    classes: list[Any] | None  # what the model predicts, as the labels were checked against (None: regression)
    received: int
    accepted: int
    problems: list[feedback.LabelProblem]
    path: str | None  # the batch's file under <state>/labels/<use case>/, None when nothing was kept


def labels_dir(config: Config) -> Path:
    return config.state_dir / LABELS_DIR / config.name


@task
def read_labels(config: Config, path: str | None, sql: str | None, sql_url: str | None) -> pd.DataFrame:
    """The batch: a CSV or Parquet file, or the rows of a SQL query (against `sql_url`, else the use case's SQL source)."""
    if path:
        return sources.read_file(Path(path), input_format(path))
    if not sql:
        raise feedback.LabelsError("give the labels as a file (path) or a SQL query (sql)")
    url = sql_url or getattr(config.dataset.source, "url", None)
    if not url:
        raise feedback.LabelsError("a SQL query needs sql_url: the use case's source is not a database")
    return sources.load_query(url, sql)


def kept_labels(config: Config) -> pd.DataFrame:
    files = sorted(labels_dir(config).glob("batch-*.parquet"))
    return pd.concat([pd.read_parquet(f) for f in files], ignore_index=True) if files else pd.DataFrame()


def model_classes(config: Config, versions: list[str]) -> list[Any] | None:
    """The classes the newest captured version predicts (its model's `classes_`); None for regression."""
    if config.task == "regression" or not versions:
        return None
    newest = registry.version(registry.connect(config), config.tracking.model_name, max(versions, key=int))
    if newest is None:
        return None
    return [c.item() if hasattr(c, "item") else c for c in registry.load_model(newest).classes_]


@task(**IO_RETRIES, retry_condition_fn=retry_unless(feedback.LabelsError))
def ingest_labels(config: Config, labels: pd.DataFrame) -> Ingested:
    """Check the batch against the captured traffic and the labels kept before; keep the good labels as one new
    file. Nothing kept before is changed: a label for a request already labelled is left out and counted."""
    captured = read_captured(config.capture_dir, config.name)
    before = kept_labels(config)
    classes = model_classes(config, sorted(set(captured["version"].astype(str))) if len(captured) else [])
    identities = set(feedback.label_keys(before, feedback.IDENTITY)) if len(before) else set()
    joined, problems = feedback.check_labels(labels, captured, identities, config, classes)
    batch = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%fZ")
    path = None
    if len(joined):
        folder = labels_dir(config)
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"batch-{batch}.parquet"
        kept = joined.assign(batch=batch)
        kept.to_parquet(path.with_suffix(".tmp"))
        path.with_suffix(".tmp").rename(path)  # a reader never sees half a batch
    result = Ingested(
        batch=batch,
        classes=classes,
        received=len(labels),
        accepted=len(joined),
        problems=problems,
        path=str(path) if path else None,
    )
    logger = get_run_logger()
    logger.info("labels: %d received, %d kept", result.received, result.accepted)
    for problem in problems:
        logger.warning("labels left out: %d %s (e.g. %s)", problem.rows, problem.reason, problem.examples[:3])
    return result


class Measured(Record):
    realized: list[feedback.Realized]
    estimable: dict[str, str]  # version -> "yes" or why not
    classes: list[Any] | None


@task(**IO_RETRIES)
def measure(config: Config, classes: list[Any] | None) -> Measured:
    """Every kept label joined to its captured row: the realized metric per version (all, per day, per segment),
    next to the estimate from the same rows' probabilities where the version's calibration allows one. `classes`:
    the ones the batch was checked against (ingest_labels loaded the model once)."""
    captured = read_captured(config.capture_dir, config.name)
    kept = kept_labels(config)
    versions = sorted(set(captured["version"].astype(str))) if len(captured) else []
    if not len(kept) or not len(captured):
        return Measured(realized=[], estimable={}, classes=classes)
    joined = feedback.join_kept(captured, kept, config)
    estimable = {v: _estimable(config, v) for v in versions}
    realized = [
        r if estimable.get(r.version) == "yes" else r.model_copy(update={"estimated": None})
        for r in feedback.realized_metrics(joined, classes, config)
    ]
    return Measured(realized=realized, estimable=estimable, classes=classes)


def _estimable(config: Config, version: str) -> str:
    """ "yes" when the version's holdout calibration error is within feedback.max_calibration_error, else why not."""
    if config.task != "binary" or config.gates.metric not in feedback.ESTIMABLE:
        return f"not estimable: CBPE estimates {list(feedback.ESTIMABLE)} of binary classifiers"
    client = registry.connect(config)
    ref = registry.version(client, config.tracking.model_name, version)
    run = client.get_run(ref.run_id) if ref is not None and ref.run_id else None
    error = run.data.metrics.get("test_calibration_error") if run is not None else None
    if error is None:
        return "not estimable: the version's calibration on its holdout was not measured (trained before it was)"
    bound = config.feedback.max_calibration_error
    if error > bound:
        return f"not estimable: calibration error {error:.3f} on its holdout > {bound} (feedback.max_calibration_error)"
    return "yes"


@task(**IO_RETRIES)
def publish_feedback(config: Config, ingested: Ingested, measured: Measured) -> str | None:
    """The numbers as table artifacts and in an MLflow monitoring run (one metric per version and slice)."""
    metric = config.gates.metric
    create_table_artifact(
        key="labels-ingested",
        table=[{"reason": "kept", "rows": ingested.accepted, "examples": ""}]
        + [{"reason": p.reason, "rows": p.rows, "examples": ", ".join(p.examples)} for p in ingested.problems],
        description=f"batch {ingested.batch}: {ingested.received} labels received, {ingested.accepted} kept",
    )
    rows = [
        {
            "environment": r.environment,
            "version": r.version,
            "slice": r.key if r.scope != "all" else "all",
            "rows": r.rows,
            f"realized {metric}": round(r.realized, 4),
            f"estimated {metric}": "–" if r.estimated is None else round(r.estimated, 4),
        }
        for r in measured.realized
    ]
    create_table_artifact(
        key="realized-performance",
        table=rows,
        description=f"{metric} on labelled production traffic, with the estimate (CBPE) from the same rows' "
        f"probabilities; estimable: {measured.estimable}",
    )
    client = registry.connect(config)
    experiment_id = registry.ensure_experiment(client, f"{config.tracking.experiment}-monitoring")
    run = client.create_run(experiment_id, run_name=f"feedback-{ingested.batch}", tags={"labels_batch": ingested.batch})
    run_id = run.info.run_id
    client.log_metric(run_id, "labels_kept", ingested.accepted)
    client.log_metric(run_id, "labels_left_out", ingested.received - ingested.accepted)
    for r in measured.realized:
        if r.scope == "segment":
            continue
        name = f"{r.environment}.v{r.version}.{metric}" + ("" if r.scope == "all" else f".{r.key}")
        client.log_metric(run_id, f"realized.{name}", r.realized)
        if r.estimated is not None:
            client.log_metric(run_id, f"estimated.{name}", r.estimated)
    client.log_dict(run_id, measured.model_dump(mode="json"), "feedback/measured.json")
    client.set_terminated(run_id)
    url = registry.run_url(config, run_id)
    if url:
        create_link_artifact(key="feedback-run", link=url, link_text="realized and estimated metrics (MLflow run)")
    return run_id


@task(**IO_RETRIES)
def judge_production(config: Config, measured: Measured) -> dict[str, Any] | None:
    """Emit `mlops.performance.degraded` when the champion's realized metric on production traffic is past its
    floor over at least feedback.min_rows labels; the retrain trigger turns it into CT (debounced). None: no event."""
    floor = config.feedback.floor_for(config.gates)
    champion = registry.champion(registry.connect(config), config.tracking.model_name)
    logger = get_run_logger()
    if floor is None or champion is None:
        logger.info("no floor for %s or no champion: nothing to judge", config.gates.metric)
        return None
    overall = next(
        (r for r in measured.realized if (r.environment, r.version, r.scope) == (PRODUCTION, champion.version, "all")),
        None,
    )
    if overall is None or overall.rows < config.feedback.min_rows:
        logger.info(
            "champion v%s: %d labelled production rows, %d needed before judging",
            champion.version,
            overall.rows if overall else 0,
            config.feedback.min_rows,
        )
        return None
    higher = config.metric_directions()[config.gates.metric]
    if (overall.realized >= floor) if higher else (overall.realized <= floor):
        return None
    payload = {
        "use_case": config.use_case,  # the retrain trigger's `use_case` parameter: None for the stack's default file
        "model_name": config.tracking.model_name,
        "version": champion.version,
        "metric": config.gates.metric,
        "realized": round(overall.realized, 6),
        "estimated": overall.estimated,
        "floor": floor,
        "rows": overall.rows,
    }
    emit_about_champion(config, DEGRADED_EVENT, champion.version, payload)
    logger.warning("%s: %s", DEGRADED_EVENT, payload)
    return payload
