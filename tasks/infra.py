"""Infrastructure tasks: plan and apply a model-service environment with Terraform, read its endpoint."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prefect import task
from prefect.artifacts import create_markdown_artifact
from prefect.logging import get_run_logger

from mlops import delivery, environments, infra
from mlops.config import Config

SERVICE_ADDRESS = "module.model_service.terraform_data.service"


@task(retries=1, retry_delay_seconds=5)
def current_outputs(config: Config, environment: str) -> dict[str, Any]:
    """What an environment serves now (its Terraform outputs); {} when it does not exist."""
    return infra.outputs(environments.initialise(config, environment))


@task
def deploy_environment(config: Config, environment: str, model_name: str, version: str) -> str:
    """Plan to a file, publish the plan, apply that file, wait for /ping; returns the endpoint."""
    logger = get_run_logger()
    env_dir = environments.initialise(config, environment)
    plan_file = environments.work_dir(config, environment) / "service.tfplan"
    variables = environments.service_variables(config, environment, model_name, version)
    summary = infra.plan(env_dir, variables, plan_file)
    if not summary.has_changes and not delivery.is_healthy(infra.outputs(env_dir)["endpoint"]):
        # The state says it runs but it does not answer (stopped by `mlops down`, crashed): replace it.
        logger.warning("%s is in the state but not answering: planning a replacement", environment)
        summary = infra.plan(env_dir, variables, plan_file, replace=[SERVICE_ADDRESS])
    create_markdown_artifact(
        key=f"terraform-plan-{environment}", markdown=_plan_markdown(environment, model_name, version, summary),
        description=f"Terraform plan for {environment}",
    )
    if summary.has_changes:
        infra.apply_plan(env_dir, plan_file)
    endpoint = infra.outputs(env_dir)["endpoint"]
    seconds = delivery.wait_until_healthy(endpoint)
    logger.info("%s serves %s version %s at %s (healthy after %.1f s)", environment, model_name, version, endpoint, seconds)
    return endpoint


@task
def destroy_environment(config: Config, environment: str) -> None:
    """Destroy an environment (stops its service), using the variables it was applied with."""
    if environments.destroy(config, environment):
        get_run_logger().info("destroyed %s", environment)


def _plan_markdown(environment: str, model_name: str, version: str, summary: infra.PlanSummary) -> str:
    def items(addresses: tuple[str, ...]) -> str:
        return ", ".join(f"`{a}`" for a in addresses) or "none"

    return (
        f"# Terraform plan: {environment} → {model_name} v{version}\n\n"
        f"| action | resources |\n|---|---|\n| add | {items(summary.to_add)} |\n| change | {items(summary.to_change)} |\n"
        f"| destroy | {items(summary.to_destroy)} |\n| replace | {items(summary.to_replace)} |\n\n"
        f"Applied from the saved plan file `{Path(summary.plan_file).name}`."
    )
