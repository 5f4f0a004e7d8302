"""The model-service environments (staging, production) as Terraform sees them. No Prefect here."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path
from typing import Any

from mlops import infra, registry
from mlops.config import PROJECT_ROOT, Config

INFRA_DIR = PROJECT_ROOT / "infra"
NAMES = ("staging", "production")


def work_dir(config: Config, environment: str, state_dir: Path | None = None) -> Path:
    """Where an environment's state and saved plans live: `<state>/terraform/<env>/`."""
    path = (state_dir or config.state_dir) / "terraform" / environment
    path.mkdir(parents=True, exist_ok=True)
    return path


def service_variables(config: Config, environment: str, model_name: str, version: str) -> dict[str, Any]:
    """The Terraform variables that describe one environment serving one model version."""
    port = config.serving.staging_port if environment == "staging" else config.serving.production_port
    return {
        "model_name": model_name,
        "model_version": str(version),
        "model_uri": f"models:/{model_name}/{version}",
        "serve_command": f"{Path(sys.executable).parent / 'mlops'} serve",
        "tracking_uri": registry.tracking_uri(config),
        "run_dir": str(config.state_dir / "services"),
        "port": port,
        "workers": config.serving.workers,
    }


def initialise(config: Config, environment: str, state_dir: Path | None = None) -> Path:
    """`terraform init` with the environment's local state; returns the root module's directory.

    Terraform runs in a copy of infra/ under the state dir, so its `.terraform/` working files
    never land in the repo and two stacks (a user's and a test's) never share them.
    """
    copy = (state_dir or config.state_dir) / "terraform" / "infra" / environment
    shutil.rmtree(copy, ignore_errors=True)  # exactly what the repo holds now, nothing stale
    shutil.copytree(INFRA_DIR, copy, ignore=shutil.ignore_patterns(".terraform", "*.tfstate*"))
    env_dir = copy / "envs" / environment
    infra.init(env_dir, work_dir(config, environment, state_dir) / "terraform.tfstate")
    return env_dir


def destroy(config: Config, environment: str, state_dir: Path | None = None) -> bool:
    """Destroy an environment (its service stops); False when there was nothing to destroy."""
    if not (work_dir(config, environment, state_dir) / "terraform.tfstate").exists():
        return False
    env_dir = initialise(config, environment, state_dir)
    current = infra.outputs(env_dir)
    if not current:
        return False
    name = current["model_uri"].removeprefix("models:/").split("/")[0]
    infra.destroy(env_dir, service_variables(config, environment, name, current["model_version"]))
    return True
