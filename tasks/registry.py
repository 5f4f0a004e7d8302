"""MLflow tasks: open the training run with its lineage, log what decided, register a passing model, its card."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import joblib
import mlflow
import pandas as pd
from prefect import runtime, task
from prefect.artifacts import create_link_artifact, create_markdown_artifact
from prefect.logging import get_run_logger

from mlops import render
from mlops.adapters import cards, model_files, registry
from mlops.config import Config
from mlops.domain import modeling
from mlops.domain.evaluation import Evaluation, predict_outputs
from mlops.domain.gates import ChampionComparison, GateDecision
from mlops.domain.modeling import Candidate
from tasks.data import Extract, Split
from tasks.retries import IO_RETRIES


def run_lineage(config: Config, reason: str, commit: str | None) -> dict[str, str]:
    """What a CT run records before its data: the code's commit, the config's hash, this flow run, why it started."""
    return {
        "git_commit": commit or registry.git_commit(),
        "config_hash": config.fingerprint(),
        "prefect_flow_run_id": str(runtime.flow_run.id),
        "trigger_reason": reason,
        **({"use_case": config.use_case} if config.use_case else {}),
    }


def version_lineage(config: Config, run: dict[str, str], extract: Extract, split: Split) -> dict[str, str]:
    """The run's lineage and the data it trained on: what a registered version carries as tags."""
    return run | {
        "data_window": extract.window,
        "data_hash": extract.data_hash,
        "dataset": config.dataset.name,
        "training_window": split.training_window,
    }


@contextmanager
def training_run(config: Config, lineage: dict[str, str]) -> Iterator[str]:
    """The MLflow run that records this CT run (its id): closed FINISHED at the end, or FAILED with the error
    that stopped the flow, which goes on up."""
    run_id = start_training_run(config, runtime.flow_run.name or "ct", lineage)
    try:
        yield run_id
    except Exception as exc:
        _close_failed_run(config, run_id, exc)
        raise
    finish_training_run(config, run_id, "FINISHED")


def _close_failed_run(config: Config, run_id: str, error: Exception) -> None:
    """Mark the MLflow run FAILED with the reason: one try, since the error may be that MLflow is down,
    and never in place of the error that stopped the run (which the flow raises)."""
    try:
        finish_training_run.with_options(retries=0)(config, run_id, "FAILED", {"error": str(error)})
    except Exception as exc:
        get_run_logger().warning("could not mark MLflow run %s FAILED (%s): it stays RUNNING there", run_id, exc)


@task(**IO_RETRIES)
def start_training_run(config: Config, run_name: str, tags: dict[str, str]) -> str:
    """Open the MLflow run that records this CT run; returns its id and links it from Prefect."""
    client = registry.connect(config)
    experiment = client.get_experiment_by_name(config.tracking.experiment)
    run = client.create_run(experiment.experiment_id, run_name=run_name, tags=tags)
    url = registry.run_url(config, run.info.run_id)
    if url:
        create_link_artifact(key="mlflow-run", link=url, link_text=f"MLflow run {run_name}")
    return run.info.run_id


@task(**IO_RETRIES)
def log_training_record(
    config: Config,
    run_id: str,
    extract: Extract,
    split: Split,
    candidates: list[Candidate],
    chosen: Candidate,
    evaluation: Evaluation,
    decision: GateDecision,
    report_html: Path,
) -> None:
    """Log params, holdout metrics (overall and per segment), the search, the decision and the Evidently report."""
    client = registry.connect(config)
    params = {
        "window": extract.window,
        "rows": extract.rows,
        "train_rows": split.train_rows,
        "test_rows": split.test_rows,
        "estimator": config.training.estimator,
        **{f"param.{k}": v for k, v in chosen.params.items()},
    }
    for key, value in params.items():
        client.log_param(run_id, key, value)
    for key, value in evaluation.overall.items():
        client.log_metric(run_id, f"test_{key}", value)
    client.log_metric(run_id, f"validation_{chosen.metric}", chosen.score)
    if decision.champion is not None:
        client.log_metric(run_id, f"champion_test_{decision.metric}", decision.champion)
    client.log_table(run_id, pd.DataFrame(render.evaluation_rows(evaluation)), "evaluation/segments.json")
    client.log_dict(run_id, [c.model_dump() for c in candidates], "search/candidates.json")
    client.log_dict(run_id, decision.model_dump(), "validation/decision.json")
    client.log_artifact(run_id, str(report_html), "data_quality")
    client.set_tag(run_id, "gate", "passed" if decision.passed else "failed")


@task(**IO_RETRIES)
def log_model(config: Config, run_id: str, model_path: Path, split: Split) -> str:
    """Log the fitted pipeline into the run with its input signature; returns the model URI."""
    model = joblib.load(model_path)
    holdout = pd.read_parquet(split.test_path)
    # Seeded holdout rows: the signature, the input example, and the service's compiled-path check.
    example, _ = modeling.features_and_target(holdout.sample(n=min(1000, len(holdout)), random_state=0), config)
    registry.connect(config)
    with mlflow.start_run(run_id=run_id):
        return model_files.log_model(model, example, predict_outputs(model, example, config.task), config)


@task(**IO_RETRIES)
def register_model(config: Config, run_id: str, model_uri: str, lineage: dict[str, str]) -> str:
    """Register a new version with lineage tags and alias `challenger`; returns the version."""
    client = registry.connect(config)
    version = registry.register(client, model_uri, run_id, config, lineage)
    get_run_logger().info("registered %s version %s as %s", config.tracking.model_name, version, registry.CHALLENGER)
    return version


def describe_version(
    config: Config,
    run_id: str,
    version: str,
    lineage: dict[str, str],
    evaluation: Evaluation,
    decision: GateDecision,
    comparison: ChampionComparison | None,
) -> None:
    """The registered version's model card, published; one that cannot be is said, not raised (the version is
    registered and CD is on its way)."""
    name = config.tracking.model_name
    links = {
        "MLflow run": registry.run_url(config, run_id),
        "MLflow version": registry.version_url(config, name, version),
    }
    card = render.model_card(name, version, config, lineage, evaluation, decision, comparison, links)
    state = publish_model_card(config, run_id, version, card, return_state=True)
    if not state.is_completed():
        get_run_logger().warning("no model card for v%s: %s", version, state.message)


@task(**IO_RETRIES)
def publish_model_card(config: Config, run_id: str, version: str, card: str) -> None:
    """The version's model card: its description in MLflow, its run's model_card.md, a Prefect artifact."""
    client = registry.connect(config)
    cards.set_model_card(client, config.tracking.model_name, version, run_id, card)
    create_markdown_artifact(key="model-card", markdown=card, description=f"{config.tracking.model_name} v{version}")


@task(**IO_RETRIES)
def finish_training_run(config: Config, run_id: str, status: str, note: dict[str, Any] | None = None) -> None:
    """Close the MLflow run as FINISHED or FAILED (with the reason when it failed)."""
    client = registry.connect(config)
    if note:
        client.log_text(run_id, json.dumps(note, indent=2, default=str), "failure.json")
    client.set_terminated(run_id, status=status)


@task(**IO_RETRIES)
def config_of_version(config: Config, run_id: str | None, label: str) -> Config:
    """The version's own config for what defines its data, split and features (the snapshot CT logged
    in its run `run_id`); this file's for how things run and the gates (config.OPERATIONAL_SECTIONS)."""
    found = model_files.version_config(registry.connect(config), run_id, config)
    get_run_logger().info(
        "%s: data, split and features %s",
        label,
        "from its training snapshot" if found is not config else "from the current config (it has no snapshot)",
    )
    return found
