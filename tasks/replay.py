"""Policy-replay tasks: replay the policies (logging progress), keep the files in MLflow, publish the table."""

from __future__ import annotations

from pathlib import Path

from prefect import task
from prefect.artifacts import create_link_artifact, create_markdown_artifact, create_table_artifact
from prefect.logging import get_run_logger

from mlops.adapters import registry, replay_report
from mlops.adapters.replay_report import ReplayFiles
from mlops.config import Config
from mlops.domain.replay import Policy
from mlops.domain.replay_results import ReplayResult
from tasks.retries import IO_RETRIES


@task
def replay_policies(
    config: Config, policies: list[Policy], directory: Path, start: str | None, end: str | None, tolerance: float
) -> tuple[ReplayResult, ReplayFiles]:
    """Every policy over the months, CT's steps and gates where a policy retrains; the files under `directory`."""
    return replay_report.replay(config, policies, directory, start, end, tolerance, log=get_run_logger().info)


@task(**IO_RETRIES)
def log_replay(config: Config, result: ReplayResult, files: ReplayFiles, run_name: str) -> str | None:
    """The table, the summary and the plot as an MLflow run of `<experiment>-replay`; returns the run's URL."""
    client = registry.connect(config)
    experiment_id = registry.ensure_experiment(client, f"{config.tracking.experiment}-replay")
    run = client.create_run(
        experiment_id,
        run_name=run_name,
        tags={"months": f"{result.months[0]}..{result.months[-1]}", "best": result.best, "cheapest": result.cheapest},
    )
    for summary in result.summary:
        client.log_metric(run.info.run_id, f"mean_{result.metric}.{summary.policy}", summary.mean)
        client.log_metric(run.info.run_id, f"cpu_s.{summary.policy}", summary.cpu_s)
    for path in (files.table, files.summary, files.plot):
        client.log_artifact(run.info.run_id, str(path), "replay")
    client.set_terminated(run.info.run_id)
    return registry.run_url(config, run.info.run_id)


@task
def publish_replay(result: ReplayResult, files: ReplayFiles, run_url: str | None) -> None:
    """The month × policy table and the summary with the recommendation, as Prefect artifacts."""
    links = {"MLflow run (replay.csv, summary.json, metric.png under artifacts/replay)": run_url} if run_url else {}
    create_table_artifact(
        key="policy-replay",
        table=[row.model_dump() for row in result.rows],
        description=f"Month x policy: the model in service and what each policy did ({files.table})",
    )
    create_markdown_artifact(
        key="policy-replay-summary",
        markdown=replay_report.summary_markdown(result, links),
        description="Per policy: monthly metric, retrains, compute; the recommendation",
    )
    if run_url:
        create_link_artifact(
            key="policy-replay-plot", link=run_url, link_text="The metric per policy over time (metric.png)"
        )
    get_run_logger().info(
        "best mean: %s; cheapest within %g: %s; files in %s",
        result.best,
        result.tolerance,
        result.cheapest,
        files.directory,
    )
