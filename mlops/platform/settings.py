"""Where the local stack lives and listens: the one owner of its settings and of its MLOPS_* variables.

`stack_settings()` is mlops.yaml's `stack:` section (and its state dir) overridden by the
environment; nothing else reads these variables. `StackSettings.client_env()` writes them, so a
shell that sources `<state>/env`, and every process of the stack, find the same stack again.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, Field, model_validator

from mlops.config import PROJECT_ROOT, Config, Stack, load_config

HOST = "127.0.0.1"

# The variables that point a process at one stack (read here; written by `client_env`).
STATE_DIR_ENV = "MLOPS_STATE_DIR"  # also honoured by every `Config.state_dir` (mlops/config.py)
PROJECT_ROOT_ENV = "MLOPS_PROJECT_ROOT"  # read by prefect.yaml's pull step
PREFECT_PORT_ENV = "MLOPS_PREFECT_PORT"
MLFLOW_PORT_ENV = "MLOPS_MLFLOW_PORT"
WORKER_PORT_ENV = "MLOPS_WORKER_PORT"
RECEIVER_PORT_ENV = "MLOPS_RECEIVER_PORT"
PORT_ENV = {"prefect": PREFECT_PORT_ENV, "mlflow": MLFLOW_PORT_ENV, "worker": WORKER_PORT_ENV, "receiver": RECEIVER_PORT_ENV}
# Read elsewhere, named here so the platform refers to them by one name.
CONFIG_ENV = "MLOPS_CONFIG"  # which mlops.yaml (mlops/config.py)
CI_CHECKS_ENV = "MLOPS_CI_CHECKS"  # the checks the post-commit hook asks CI for (post-commit.sh)

# Inherited settings that would point a process at somebody else's server, profile, store or stack.
FOREIGN_ENV = (
    "PREFECT_API_URL",
    "PREFECT_API_KEY",
    "PREFECT_PROFILE",
    "PREFECT_PROFILES_PATH",
    "PREFECT_HOME",
    "PREFECT_UI_URL",
    "PREFECT_UI_API_URL",
    "PREFECT_API_DATABASE_CONNECTION_URL",
    "MLFLOW_TRACKING_URI",
    "MLFLOW_REGISTRY_URI",
    STATE_DIR_ENV,
    PROJECT_ROOT_ENV,
    *PORT_ENV.values(),
)

_DEFAULTS = Stack()


class _Below:
    """A read-only path below the settings' state dir (a class attribute, so pydantic leaves it alone)."""

    def __init__(self, name: str) -> None:
        self.name = name

    def __get__(self, settings: StackSettings | None, owner: type) -> Any:
        return self if settings is None else settings.state_dir / self.name


class _At:
    """A read-only URL on HOST at one of the settings' ports (a class attribute, as `_Below`)."""

    def __init__(self, port_field: str, path: str = "") -> None:
        self.port_field, self.path = port_field, path

    def __get__(self, settings: StackSettings | None, owner: type) -> Any:
        return self if settings is None else f"http://{HOST}:{getattr(settings, self.port_field)}{self.path}"


class StackSettings(BaseModel):
    """Where the local stack lives and listens."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    state_dir: Path
    prefect_port: int = Field(ge=1, le=65535)
    mlflow_port: int = Field(ge=1, le=65535)
    worker_port: int = Field(ge=1, le=65535)  # the worker's /health endpoint
    receiver_port: int = Field(default=_DEFAULTS.receiver_port, ge=1, le=65535)  # MLflow webhooks → Prefect events
    project_root: Path = PROJECT_ROOT

    @model_validator(mode="after")
    def _ports_differ(self) -> StackSettings:
        ports = [self.prefect_port, self.mlflow_port, self.worker_port, self.receiver_port]
        if len(set(ports)) != len(ports):
            raise ValueError(f"prefect, mlflow, worker and receiver ports must differ, got {ports}")
        return self

    # Where each part answers, on 127.0.0.1.
    prefect_url: ClassVar[_At] = _At("prefect_port")  # the UI
    prefect_api_url: ClassVar[_At] = _At("prefect_port", "/api")
    mlflow_uri: ClassVar[_At] = _At("mlflow_port")
    worker_health_url: ClassVar[_At] = _At("worker_port", "/health")
    webhook_url: ClassVar[_At] = _At("receiver_port", "/mlflow/webhook")  # MLflow's webhook → the receiver

    @property
    def webhook_secret_file(self) -> Path:
        return self.secrets_dir / "webhook_secret"

    # Where each part keeps its files, below the state dir.
    prefect_home: ClassVar[_Below] = _Below("prefect")
    mlflow_dir: ClassVar[_Below] = _Below("mlflow")
    run_dir: ClassVar[_Below] = _Below("run")  # pid files, the stack lock
    log_dir: ClassVar[_Below] = _Below("logs")
    secrets_dir: ClassVar[_Below] = _Below("secrets")  # 0700; each secret file 0600
    env_file: ClassVar[_Below] = _Below("env")  # `source` me

    def client_env(self) -> dict[str, str]:
        """What a shell or a flow run needs to use this stack (also written to `<state>/env`)."""
        return {
            "PREFECT_API_URL": self.prefect_api_url,
            "MLFLOW_TRACKING_URI": self.mlflow_uri,
            PROJECT_ROOT_ENV: str(self.project_root),  # prefect.yaml's pull step
            # So that `mlops status|down` and flows (which read the config) find this very stack.
            STATE_DIR_ENV: str(self.state_dir),
            PREFECT_PORT_ENV: str(self.prefect_port),
            MLFLOW_PORT_ENV: str(self.mlflow_port),
            WORKER_PORT_ENV: str(self.worker_port),
            RECEIVER_PORT_ENV: str(self.receiver_port),
        }


def stack_settings(config: Config | None = None) -> StackSettings:
    """The config's `stack:` section (mlops.yaml by default), overridden by MLOPS_STATE_DIR and MLOPS_*_PORT."""
    cfg = config or load_config()
    env = os.environ
    return StackSettings(
        state_dir=cfg.state_dir,  # honours MLOPS_STATE_DIR
        prefect_port=env.get(PREFECT_PORT_ENV) or cfg.stack.prefect_port,
        mlflow_port=env.get(MLFLOW_PORT_ENV) or cfg.stack.mlflow_port,
        worker_port=env.get(WORKER_PORT_ENV) or cfg.stack.worker_port,
        receiver_port=env.get(RECEIVER_PORT_ENV) or cfg.stack.receiver_port,
    )
