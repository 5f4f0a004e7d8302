"""The model-service environments (staging, production) as Terraform sees them. No Prefect here.

Both are the one root module `infra/service`: an environment is its own state (chosen at init)
plus its variable file `infra/service/env/<environment>.tfvars` (passed with -var-file).
"""

from __future__ import annotations

import shutil
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mlops.adapters import registry, service_checks
from mlops.adapters import terraform as infra
from mlops.config import PROJECT_ROOT, Config

INFRA_DIR = PROJECT_ROOT / "infra"
ROOT_MODULE = "service"  # under infra/
SERVICE_OUTPUT = "service"  # the root's one output: an object of what runs and where
SERVICE_ADDRESS = "terraform_data.service"  # the root's one resource: replaced when its process is gone
PLAN_FILE = "service.tfplan"  # in the environment's work dir
NAMES = ("staging", "production")


def _known(environment: str) -> str:
    if environment not in NAMES:
        raise ValueError(f"unknown environment {environment!r}; choose from {list(NAMES)}")
    return environment


def work_dir(config: Config, environment: str, state_dir: Path | None = None) -> Path:
    """Where an environment's state and saved plans live: `<state>/terraform/<env>/`."""
    path = (state_dir or config.state_dir) / "terraform" / _known(environment)
    path.mkdir(parents=True, exist_ok=True)
    return path


def var_file(root_dir: Path, environment: str) -> Path:
    """The environment's variable file in the root module `root_dir`: `env/<environment>.tfvars`."""
    return Path(root_dir) / "env" / f"{_known(environment)}.tfvars"


def service_outputs(root_dir: Path) -> dict[str, Any]:
    """What an initialised environment serves now: the root's `service` output; {} when nothing is applied.

    The flat dict every reader uses: endpoint, environment, model_version, model_uri, pid_file,
    log_file. A state applied before the module was folded into the root holds these as six
    outputs of their own until its next apply, so those are read as they are.
    """
    current = infra.outputs(root_dir)
    return dict(current.get(SERVICE_OUTPUT, current))


def service_variables(
    config: Config,
    environment: str,
    model_name: str,
    version: str,
    *,
    state_dir: Path | None = None,
    tracking_uri: str | None = None,
) -> dict[str, Any]:
    """The `-var` values for one environment serving one model version; they win over its var file.

    The port comes from the config (`serving.<env>_port`), so mlops.yaml decides, not the var
    file's default. `environment` repeats the var file's, so a plan made without the var file
    still describes the right environment. `state_dir` and `tracking_uri` name a stack other than
    the one the config and the environment point at (`mlops up` restoring its own services).
    """
    port = config.serving.staging_port if _known(environment) == "staging" else config.serving.production_port
    return {
        "environment": environment,
        "model_name": model_name,
        "model_version": str(version),
        "model_uri": f"models:/{model_name}/{version}",
        "serve_command": f"{Path(sys.executable).parent / 'mlops'} serve",
        "tracking_uri": tracking_uri or registry.tracking_uri(config),
        "run_dir": str((state_dir or config.state_dir) / "services"),
        "port": port,
        "workers": config.serving.workers,
    }


def initialise(config: Config, environment: str, state_dir: Path | None = None) -> Path:
    """`terraform init` of the service root with the environment's local state; returns the root's directory.

    Terraform runs in a copy of infra/ under the state dir, one per environment, so its
    `.terraform/` working files (which remember the state path) never land in the repo, and two
    environments or two stacks (a user's and a test's) never share them.
    """
    copy = (state_dir or config.state_dir) / "terraform" / "infra" / _known(environment)
    shutil.rmtree(copy, ignore_errors=True)  # exactly what the repo holds now, nothing stale
    shutil.copytree(INFRA_DIR, copy, ignore=shutil.ignore_patterns(".terraform", "*.tfstate*"))
    root_dir = copy / ROOT_MODULE
    infra.init(root_dir, work_dir(config, environment, state_dir) / "terraform.tfstate")
    return root_dir


def destroy(config: Config, environment: str, state_dir: Path | None = None) -> bool:
    """Destroy an environment (its service stops); False when there was nothing to destroy."""
    if not (work_dir(config, environment, state_dir) / "terraform.tfstate").exists():
        return False
    root_dir = initialise(config, environment, state_dir)
    current = service_outputs(root_dir)
    if not current:
        return False
    name = current["model_uri"].removeprefix("models:/").split("/")[0]
    variables = service_variables(config, environment, name, current["model_version"])
    infra.destroy(root_dir, variables, var_file=var_file(root_dir, environment))
    return True


def current_service(config: Config, environment: str, state_dir: Path | None = None) -> dict[str, Any]:
    """What an environment serves, as `service_outputs`, read without touching the copy CD plans in.

    `initialise` rebuilds the environment's working copy, which would pull it from under a CD
    run applying there; a reader (`mlops status`, `mlops down`) initialises a throwaway copy.
    """
    state = (
        (state_dir or config.state_dir) / "terraform" / _known(environment) / "terraform.tfstate"
    )  # as work_dir's, unmade
    if not state.exists():
        return {}
    with tempfile.TemporaryDirectory(prefix=f"mlops-{environment}-") as tmp:
        copy = Path(tmp) / "infra"
        shutil.copytree(INFRA_DIR, copy, ignore=shutil.ignore_patterns(".terraform", "*.tfstate*"))
        infra.init(copy / ROOT_MODULE, state)
        return service_outputs(copy / ROOT_MODULE)


def plan_service(
    root_dir: Path, environment: str, variables: dict[str, Any], plan_file: Path
) -> tuple[infra.PlanSummary, bool]:
    """Plan `variables` into `plan_file`; when that changes nothing but the service does not answer, plan its replacement.

    Returns the plan and whether it replaces a service the state holds but that is gone
    (stopped by `mlops down`, crashed).
    """
    env_file = var_file(root_dir, environment)
    summary = infra.plan(root_dir, variables, plan_file, var_file=env_file)
    if summary.has_changes or service_checks.is_healthy(service_outputs(root_dir)["endpoint"]):
        return summary, False
    return infra.plan(root_dir, variables, plan_file, replace=[SERVICE_ADDRESS], var_file=env_file), True


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
    if _known(environment) != "production" or champion is None:
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

    Returns:
        The endpoint and the seconds it took to answer (≈ 0 when it was already serving).
    """
    root_dir = initialise(config, restore.environment, state_dir)
    plan_file = work_dir(config, restore.environment, state_dir) / PLAN_FILE
    variables = service_variables(
        config, restore.environment, restore.model_name, restore.version, state_dir=state_dir, tracking_uri=tracking_uri
    )
    summary, _ = plan_service(root_dir, restore.environment, variables, plan_file)
    if summary.has_changes:
        infra.apply_plan(root_dir, plan_file)
    endpoint = service_outputs(root_dir)["endpoint"]
    return endpoint, service_checks.wait_until_healthy(endpoint)
