"""Infrastructure tasks: plan and apply a model-service environment with Terraform, read its endpoint.

`deploy_environment` runs inside CD's transaction: its rollback hook puts the environment back on
the version it served before (the champion), or destroys it when there was none.
"""

from __future__ import annotations

from pathlib import Path

from prefect import task
from prefect.artifacts import create_markdown_artifact
from prefect.logging import get_run_logger
from prefect.transactions import Transaction

from mlops import render
from mlops.adapters import environments, service_checks
from mlops.adapters import terraform as tf
from mlops.config import Config
from tasks.runs import remember_for_rollback

RESTORE_TO = "restore_to"  # transaction value: the version an environment goes back to on rollback (None: destroy)


@task(retries=1, retry_delay_seconds=5)
def serving_version(config: Config, environment: str) -> str | None:
    """The version an environment serves and answers /ping with now; None when applied but down, or not applied."""
    outputs = environments.current_service(config, environment)
    if not outputs or not service_checks.is_healthy(outputs["endpoint"]):
        return None
    return str(outputs["model_version"])


def apply_service(config: Config, environment: str, model_name: str, version: str, shadow: str | None = None) -> str:
    """Plan to a file, publish the plan, apply that file, wait for /ping; returns the endpoint. With `shadow`, that
    version is scored beside `version` on every request, off the answers' path (delivery.strategy: shadow)."""
    logger = get_run_logger()
    env_dir = environments.initialise(config, environment)
    plan_file = environments.work_dir(config, environment) / environments.PLAN_FILE
    variables = environments.service_variables(config, environment, model_name, version, shadow=shadow)
    summary, replaced = environments.plan_service(env_dir, environment, variables, plan_file)
    if replaced:
        logger.warning("%s is in the state but not answering: planning a replacement", environment)
    create_markdown_artifact(
        key=f"terraform-plan-{environment}",
        markdown=render.plan_markdown(environment, model_name, version, summary),
        description=f"Terraform plan for {environment}",
    )
    if summary.has_changes:
        tf.apply_plan(env_dir, plan_file)
    outputs = environments.service_outputs(env_dir)
    endpoint = outputs["endpoint"]
    seconds = service_checks.wait_until_healthy(
        endpoint, pid_file=Path(outputs["pid_file"]), log_file=Path(outputs["log_file"])
    )
    service_checks.require_serving(endpoint, outputs["model_uri"])
    logger.info(
        "%s serves %s version %s%s at %s (healthy after %.1f s)",
        environment,
        model_name,
        version,
        f" with v{shadow} in shadow" if shadow else "",
        endpoint,
        seconds,
    )
    return endpoint


@task
def deploy_environment(
    config: Config,
    environment: str,
    model_name: str,
    version: str,
    restore_to: str | None,
    shadow: str | None = None,
) -> str:
    """Apply `version` (with `shadow` beside it) to the environment; if the delivery rolls back, it returns to
    `restore_to` alone.

    An apply that fails (a service that never answers) puts the environment back itself: the
    transaction rolls back only the tasks that completed.
    """
    remember_for_rollback(config=config, environment=environment, model_name=model_name, **{RESTORE_TO: restore_to})
    try:
        return apply_service(config, environment, model_name, version, shadow)
    except Exception:
        restore_environment(config, environment, model_name, restore_to)
        raise


@deploy_environment.on_rollback
def _restore(txn: Transaction) -> None:
    """Rollback hook: the environment goes back to what it served before this delivery."""
    restore_environment(txn.get("config"), txn.get("environment"), txn.get("model_name"), txn.get(RESTORE_TO))


def restore_environment(config: Config, environment: str, name: str, previous: str | None) -> None:
    """The environment back on `previous` (its service answering), or destroyed when there was none."""
    if previous is None:
        destroyed = environments.destroy(config, environment)
        get_run_logger().warning(
            "rolled back %s: %s", environment, "destroyed (no champion)" if destroyed else "nothing to destroy"
        )
        return
    apply_service(config, environment, name, previous)
    get_run_logger().warning("rolled back %s to %s v%s", environment, name, previous)


@task
def destroy_environment(config: Config, environment: str) -> None:
    """Destroy an environment (stops its service), using the variables it was applied with."""
    if environments.destroy(config, environment):
        get_run_logger().info("destroyed %s", environment)
