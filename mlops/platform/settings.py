"""Where the local stack lives and listens: the one owner of its settings and of its MLOPS_* variables.

`stack_settings()` is mlops.yaml's `stack:` section (and its state dir) overridden by the
environment; nothing else reads these variables. `StackSettings.client_env()` writes them, so a
shell that sources `<state>/env`, and every process of the stack, find the same stack again.

The stack's credentials (Prefect's API auth string, MLflow's admin password) are generated once
by `ensure_credentials()` into `<state>/secrets/` (0700, each file 0600) and handed to clients
only through the environment (`client_env()`), never on a command line.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path
from typing import Any, ClassVar, Literal
from urllib.parse import quote

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
POSTGRES_PORT_ENV = "MLOPS_POSTGRES_PORT"
PORT_ENV = {
    "prefect": PREFECT_PORT_ENV,
    "mlflow": MLFLOW_PORT_ENV,
    "worker": WORKER_PORT_ENV,
    "receiver": RECEIVER_PORT_ENV,
    "postgres": POSTGRES_PORT_ENV,
}
# embedded: Prefect and MLflow on SQLite files, CT's search in threads. scale: both on PostgreSQL, the search on Dask.
PROFILE_ENV = "MLOPS_PROFILE"
Profile = Literal["embedded", "scale"]
PROFILE_FILE = "profile"  # in the state dir
# Read elsewhere, named here so the platform refers to them by one name.
CONFIG_ENV = "MLOPS_CONFIG"  # which mlops.yaml (mlops/config.py)
CI_CHECKS_ENV = "MLOPS_CI_CHECKS"  # the checks the post-commit hook asks CI for (post-commit.sh)

# The clients' credentials for this stack (written by `client_env`); their values are secrets.
PREFECT_AUTH_ENV = (
    "PREFECT_API_AUTH_STRING"  # basic auth "user:password"; the server's is PREFECT_SERVER_API_AUTH_STRING
)
MLFLOW_USERNAME_ENV = "MLFLOW_TRACKING_USERNAME"
MLFLOW_PASSWORD_ENV = "MLFLOW_TRACKING_PASSWORD"
PREFECT_USER = "mlops"
POSTGRES_USER = "mlops"  # the scale profile's database superuser
MLFLOW_ADMIN = "mlops-admin"  # the basic-auth app's admin: registry webhooks are admin-only

MLFLOW_AUTH_CACHE_TTL_S = 600  # MLflow's basic-auth credential cache (off by default in MLflow)
HEARTBEAT_ENV, HEARTBEAT_SECONDS = "PREFECT_FLOWS_HEARTBEAT_FREQUENCY", 30  # Prefect's minimum; see client_env
# Inherited settings that would point a process at somebody else's server, profile, store or stack.
FOREIGN_ENV = (
    "PREFECT_API_URL",
    "PREFECT_API_KEY",
    PREFECT_AUTH_ENV,
    "PREFECT_SERVER_API_AUTH_STRING",
    "PREFECT_PROFILE",
    "PREFECT_PROFILES_PATH",
    "PREFECT_HOME",
    "PREFECT_UI_URL",
    "PREFECT_UI_API_URL",
    "PREFECT_API_DATABASE_CONNECTION_URL",
    "MLFLOW_TRACKING_URI",
    "MLFLOW_REGISTRY_URI",
    MLFLOW_USERNAME_ENV,
    MLFLOW_PASSWORD_ENV,
    "MLFLOW_TRACKING_TOKEN",
    "MLFLOW_AUTH_CONFIG_PATH",
    "MLFLOW_FLASK_SERVER_SECRET_KEY",
    STATE_DIR_ENV,
    PROJECT_ROOT_ENV,
    PROFILE_ENV,
    *PORT_ENV.values(),
    HEARTBEAT_ENV,
)

_DEFAULTS = Stack()


class StackNotSetUp(RuntimeError):
    """The local stack was never started here: no credentials to talk to it with."""


def write_private(path: Path, text: str) -> None:
    """Write `text` to `path` readable by its owner only (0600), in a directory made 0700 if new."""
    if not path.parent.exists():
        path.parent.mkdir(mode=0o700, parents=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        os.fchmod(out.fileno(), 0o600)  # a file made before by something else keeps its mode otherwise
        out.write(text)


def private_secret(path: Path, length: int = 32) -> str:
    """The random secret in `path`: made once (0600, in a 0700 dir), then read."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    path.parent.chmod(0o700)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:  # made before, or by a concurrent `up`
        return path.read_text().strip()
    with os.fdopen(fd, "w") as out:
        out.write(secrets.token_urlsafe(length))
    return path.read_text().strip()


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
    profile: Profile = "embedded"
    postgres_port: int = Field(default=_DEFAULTS.postgres_port, ge=1, le=65535)  # the scale profile's PostgreSQL

    @model_validator(mode="after")
    def _ports_differ(self) -> StackSettings:
        ports = [self.prefect_port, self.mlflow_port, self.worker_port, self.receiver_port]
        ports += [self.postgres_port] if self.profile == "scale" else []
        if len(set(ports)) != len(ports):
            raise ValueError(
                f"the stack's ports (prefect, mlflow, worker, receiver, postgres) must differ, got {ports}"
            )
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

    # The stack's credentials, below `secrets_dir`: made by `ensure_credentials`.
    @property
    def prefect_password_file(self) -> Path:
        return self.secrets_dir / "prefect-api-password"

    @property
    def mlflow_password_file(self) -> Path:
        return self.secrets_dir / "mlflow-admin-password"

    @property
    def mlflow_flask_key_file(self) -> Path:
        return self.secrets_dir / "mlflow-flask-secret-key"  # MLflow's auth app signs its CSRF tokens with it

    @property
    def postgres_password_file(self) -> Path:
        return self.secrets_dir / "postgres-password"  # the scale profile's database superuser `mlops`

    def postgres_url(self, database: str, driver: str = "postgresql") -> str:
        """A client URL of one of the scale profile's databases, with its credentials: for environments only, never a log.

        Reads the password `ensure_credentials` made; before that (`mlops status` or `down` on a state dir `up` never
        finished) the URL has none, so a reader never writes a secret."""
        file = self.postgres_password_file
        password = quote(file.read_text().strip() if file.exists() else "", safe="")
        return f"{driver}://{POSTGRES_USER}:{password}@{HOST}:{self.postgres_port}/{database}"

    @property
    def warm_socket(self) -> Path:
        """The warm flow-run server's Unix socket (mlops/platform/warmstart.py): in the run dir, unless that path is
        past the 107 bytes a socket path may hold, then in a 0700 directory of the temp dir named after the state dir."""
        path = self.run_dir / "warmstart.sock"
        if len(str(path).encode()) < 100:
            return path
        import hashlib
        import tempfile

        short = (
            Path(tempfile.gettempdir())
            / f"mlops-{os.getuid()}-{hashlib.sha256(str(self.state_dir).encode()).hexdigest()[:12]}"
        )
        short.mkdir(mode=0o700, exist_ok=True)
        found = short.lstat()
        if found.st_uid != os.getuid() or found.st_mode & 0o077 or not short.is_dir() or short.is_symlink():
            raise PermissionError(
                f"{short} is not a private directory of this user: remove it, or use a shorter MLOPS_STATE_DIR"
            )
        return short / "warmstart.sock"

    @property
    def mlflow_auth_config(self) -> Path:
        return self.secrets_dir / "mlflow-basic-auth.ini"  # MLFLOW_AUTH_CONFIG_PATH; holds the admin password

    # Where each part keeps its files, below the state dir.
    prefect_home: ClassVar[_Below] = _Below("prefect")
    mlflow_dir: ClassVar[_Below] = _Below("mlflow")
    run_dir: ClassVar[_Below] = _Below("run")  # pid files, the stack lock
    log_dir: ClassVar[_Below] = _Below("logs")
    secrets_dir: ClassVar[_Below] = _Below("secrets")  # 0700; each secret file 0600
    env_file: ClassVar[_Below] = _Below("env")  # `source` me
    profile_file: ClassVar[_Below] = _Below(PROFILE_FILE)  # the profile the state dir was made with (`up` writes it)

    def ensure_credentials(self) -> None:
        """Generate the stack's credentials once (`secrets_dir` 0700, each file 0600) and MLflow's auth config."""
        password = private_secret(self.mlflow_password_file)
        private_secret(self.prefect_password_file)
        private_secret(self.mlflow_flask_key_file)
        if self.profile == "scale":
            private_secret(self.postgres_password_file)  # the database user `mlops` (initdb and every client)
        # Read by MLflow's auth app; the admin password only matters the first time (empty user store).
        write_private(
            self.mlflow_auth_config,
            "\n".join(
                [
                    "[mlflow]",
                    "default_permission = NO_PERMISSIONS",  # a user MLflow knows but was granted nothing can do nothing
                    f"database_uri = {self._mlflow_users_store()}",
                    f"admin_username = {MLFLOW_ADMIN}",
                    f"admin_password = {password}",
                    "authorization_function = mlflow.server.auth:authenticate_request_basic_auth",
                    # Each request's password check is a scrypt hash (156 ms of CPU here): uncached, the
                    # stack's MLflow server spent 40% of a core on it under the test suite. One worker
                    # process, and users change only through its API, so a cached check is never stale.
                    f"auth_cache_ttl_seconds = {MLFLOW_AUTH_CACHE_TTL_S}",
                    "",
                ]
            ),
        )

    def _mlflow_users_store(self) -> str:
        if self.profile == "scale":  # `%` is configparser's interpolation: a password may hold one once URL-quoted
            return self.postgres_url("mlflow_auth").replace("%", "%%")
        return f"sqlite:///{self.mlflow_dir / 'basic_auth.db'}"

    def credential_env(self) -> dict[str, str]:
        """The clients' credentials for this stack; {} before `ensure_credentials` made them."""
        try:
            prefect_password = self.prefect_password_file.read_text().strip()
            mlflow_password = self.mlflow_password_file.read_text().strip()
        except FileNotFoundError:
            return {}
        return {
            PREFECT_AUTH_ENV: f"{PREFECT_USER}:{prefect_password}",
            MLFLOW_USERNAME_ENV: MLFLOW_ADMIN,
            MLFLOW_PASSWORD_ENV: mlflow_password,
        }

    def prefect_settings(self) -> Any:
        """A context in which this process's Prefect client talks to this stack, authenticated.

        Prefect reads its settings from the environment once, when it is first imported: a process
        that imported Prefect before it knew the stack (as `up` does) must use this, not os.environ.
        """
        from prefect.settings import PREFECT_API_AUTH_STRING, PREFECT_API_URL, temporary_settings

        credentials = self.credential_env()
        if not credentials:
            raise StackNotSetUp(f"no stack credentials under {self.secrets_dir}: start the local stack with `make up`")
        return temporary_settings(
            updates={PREFECT_API_URL: self.prefect_api_url, PREFECT_API_AUTH_STRING: credentials[PREFECT_AUTH_ENV]}
        )

    def client_env(self) -> dict[str, str]:
        """What a shell or a flow run needs to use this stack, credentials included (also written to `<state>/env`, 0600)."""
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
            PROFILE_ENV: self.profile,  # flow runs choose their compute by it (tasks/compute.py)
            **({POSTGRES_PORT_ENV: str(self.postgres_port)} if self.profile == "scale" else {}),
            # Flow runs heartbeat every 30 s (Prefect's default is 180): the zombie-run automation
            # (deployments/automations.yaml) crashes a run silent for 90 s, so every client of this stack sets it.
            HEARTBEAT_ENV: str(HEARTBEAT_SECONDS),
            **self.credential_env(),
        }


def stack_settings(config: Config | None = None) -> StackSettings:
    """The config's `stack:` section (mlops.yaml by default), overridden by MLOPS_STATE_DIR, MLOPS_*_PORT and MLOPS_PROFILE.

    Without MLOPS_PROFILE, the profile is the one the state dir was made with (so `mlops down` and
    `mlops status` find a scale stack's PostgreSQL), else `embedded`.
    """
    cfg = config or load_config()
    env = os.environ
    state_dir = cfg.state_dir  # honours MLOPS_STATE_DIR
    # The variables are text: pydantic validates them into the ports and the profile, as for mlops.yaml.
    return StackSettings.model_validate(
        {
            "state_dir": state_dir,
            "prefect_port": env.get(PREFECT_PORT_ENV) or cfg.stack.prefect_port,
            "mlflow_port": env.get(MLFLOW_PORT_ENV) or cfg.stack.mlflow_port,
            "worker_port": env.get(WORKER_PORT_ENV) or cfg.stack.worker_port,
            "receiver_port": env.get(RECEIVER_PORT_ENV) or cfg.stack.receiver_port,
            "postgres_port": env.get(POSTGRES_PORT_ENV) or cfg.stack.postgres_port,
            "profile": env.get(PROFILE_ENV) or recorded_profile(state_dir) or "embedded",
        }
    )


def recorded_profile(state_dir: Path) -> str | None:
    """The profile a state dir was made with; None before its first `up`."""
    try:
        return (state_dir / PROFILE_FILE).read_text().strip() or None
    except FileNotFoundError:
        return None
