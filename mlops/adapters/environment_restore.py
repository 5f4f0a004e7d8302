"""What each environment comes back on when the stack restarts (`mlops up`), and bringing it back. No Prefect here.

Production follows the `champion` alias, staging keeps what its state says; a service that answers as it was
applied is left alone, anything else goes through plan and apply (`environments.plan_service`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mlops.adapters import environments, registry, service_checks
from mlops.adapters import terraform as infra
from mlops.config import Config

# The names the root's input gives values whose variable is named otherwise (local.service in infra/service/main.tf).
APPLIED_AS = {"shadow_model_uri": "shadow_uri"}


@dataclass(frozen=True)
class Restore:
    """What one environment comes back on when the stack restarts."""

    environment: str
    model_name: str
    version: str
    reason: str | None = None  # why this is not simply what the state says


def _served_model(served: dict[str, Any]) -> tuple[str, str] | None:
    """(model name, version) from `service_outputs`; None when nothing is applied."""
    if not served:
        return None
    return served["model_uri"].removeprefix("models:/").split("/")[0], str(served["model_version"])


def restore_target(environment: str, served: dict[str, Any], model_name: str, champion: str | None) -> Restore | None:
    """What an environment comes back on: what its state serves, except that production follows the champion.

    Args:
        environment: `staging` or `production`.
        served: Its `service_outputs` ({} when nothing is applied).
        model_name: The registered model whose `champion` alias is given.
        champion: The version behind `champion`; None when there is none.

    Returns:
        The version to apply, with the reason when the alias overrules the state; None when there
        is nothing to bring back.
    """
    stated = _served_model(served)
    if environments.known(environment) != "production" or champion is None:
        if stated is None:
            return None
        reason = (
            None
            if environment != "production"
            else f"no {registry.CHAMPION} alias on {model_name}: kept as the state says"
        )
        return Restore(environment, *stated, reason=reason)
    wanted = (model_name, str(champion))
    if stated == wanted:
        return Restore(environment, *wanted)
    said = "nothing" if stated is None else f"{stated[0]} v{stated[1]}"
    return Restore(
        environment,
        *wanted,
        reason=f"its state says {said}, alias {registry.CHAMPION} says v{champion}: the alias wins",
    )


def restore_service(
    config: Config, restore: Restore, *, state_dir: Path | None = None, tracking_uri: str | None = None
) -> tuple[str, float]:
    """Apply `restore` from a saved plan (replacing a service that is gone), then wait for /ping.

    A service that answers and whose state was applied with exactly these variables is left alone without
    running Terraform (its plan would change nothing; ≈ 4 s of CPU per environment at every `up`). A change
    to infra/ itself applies at the environment's next delivery.

    Returns:
        The endpoint and the seconds it took to answer (0 when it was already serving).
    """
    variables = environments.service_variables(
        config, restore.environment, restore.model_name, restore.version, state_dir=state_dir, tracking_uri=tracking_uri
    )
    state = environments.state_file(state_dir or config.state_dir, config.name, restore.environment)
    if (endpoint := serving_as_applied(state, variables)) is not None:
        return endpoint, 0.0
    root_dir = environments.initialise(config, restore.environment, state_dir)
    plan_file = environments.work_dir(config, restore.environment, state_dir) / environments.PLAN_FILE
    summary, _ = environments.plan_service(root_dir, restore.environment, variables, plan_file)
    if summary.has_changes:
        infra.apply_plan(root_dir, plan_file)
    endpoint = environments.service_outputs(root_dir)["endpoint"]
    return endpoint, service_checks.wait_until_healthy(endpoint)


def serving_as_applied(state_file: Path, variables: dict[str, Any]) -> str | None:
    """The endpoint when `state_file` holds the service applied with `variables` (each the same value in its input) and
    it answers /ping; None when Terraform must look (no state, another layout, a variable changed, not answering)."""
    try:
        state = json.loads(state_file.read_text())
        [resource] = [r for r in state["resources"] if r["type"] == "terraform_data" and r["name"] == "service"]
        applied = resource["instances"][0]["attributes"]["input"]["value"]
        endpoint = state["outputs"][environments.SERVICE_OUTPUT]["value"]["endpoint"]
    except (OSError, ValueError, KeyError, IndexError, TypeError):
        return None
    if any(str(applied.get(APPLIED_AS.get(key, key))) != str(value) for key, value in variables.items()):
        return None
    return endpoint if service_checks.is_healthy(endpoint) else None
