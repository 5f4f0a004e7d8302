"""Where the local stack lives and listens, and the credentials it generates: one settings model.

`StackSettings` (pydantic-settings) is read in this order, the first that has a value wins:
1. the arguments given (tests and benchmarks build throwaway stacks this way);
2. the environment, `MLOPS_<FIELD>` (`MLOPS_STATE_DIR`, `MLOPS_PREFECT_PORT`, …, `MLOPS_PROFILE`): what
   `client_env()` writes for every process of the stack and into `<state>/env`, so they find it again;
3. the state dir's `profile` file, the profile `mlops up` made it with (`mlops down` finds a scale stack's database);
4. mlops.yaml's `stack:` section (`Stack`, the fields a team may set in the file); 5. the defaults.
`stack_settings_of(section)` builds it; `Config.state_dir` asks it, so nothing else reads these variables.

The stack's credentials (Prefect's API auth string, MLflow's admin password, the scale profile's database
password, MLflow's webhook keys) are generated once by `private_secret()` into `<state>/secrets/` (0700,
each file 0600) and handed to clients only through the environment (`client_env()`), never on a command line.
"""

from __future__ import annotations

import hashlib
import os
import secrets
import tempfile
from collections.abc import Callable
from contextvars import ContextVar
from pathlib import Path
from typing import Any, Literal
from urllib.parse import quote

from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from mlops.config.sections import Strict, resolve_path
from mlops.usercode import PROJECT_ROOT

HOST = "127.0.0.1"
ENV_PREFIX = "MLOPS_"
PROFILE_FILE = "profile"  # in the state dir
Profile = Literal["embedded", "scale"]  # embedded: SQLite stores, CT's search in threads; scale: PostgreSQL, Dask
PREFECT_AUTH_ENV = (
    "PREFECT_API_AUTH_STRING"  # basic auth "user:password"; the server's is PREFECT_SERVER_API_AUTH_STRING
)
MLFLOW_USERNAME_ENV, MLFLOW_PASSWORD_ENV = "MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD"
PREFECT_USER, POSTGRES_USER = "mlops", "mlops"  # the API's user; the scale profile's database superuser
MLFLOW_ADMIN = "mlops-admin"  # the basic-auth app's admin: registry webhooks are admin-only
MLFLOW_AUTH_CACHE_TTL_S = 600  # MLflow's basic-auth credential cache (off by default in MLflow)
HEARTBEAT_ENV, HEARTBEAT_SECONDS = "PREFECT_FLOWS_HEARTBEAT_FREQUENCY", 30  # Prefect's minimum; see client_env


class StackNotSetUp(RuntimeError):
    """The local stack was never started here: no credentials to talk to it with."""


def env_name(field: str) -> str:
    """The environment variable that sets a field of the stack's settings."""
    return f"{ENV_PREFIX}{field.upper()}"


def write_private(path: Path, text: str) -> None:
    """Write `text` to `path` readable by its owner only (0600), in a directory made 0700 if new."""
    if not path.parent.exists():
        path.parent.mkdir(mode=0o700, parents=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        os.fchmod(out.fileno(), 0o600)  # a file made before by something else keeps its mode otherwise
        out.write(text)


def private_secret(path: Path, make: Callable[[], str] = lambda: secrets.token_urlsafe(32)) -> str:
    """The secret in `path`: made once by `make()` (0600, in a 0700 dir), then read. The one maker of secret files."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    path.parent.chmod(0o700)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:  # made before, or by a concurrent `up`
        return path.read_text().strip()
    with os.fdopen(fd, "w") as out:
        out.write(make())
    return path.read_text().strip()


class Stack(Strict):
    """mlops.yaml's `stack:` section: the local stack's ports and state dir (StackSettings adds the environment)."""

    prefect_port: int = Field(default=4200, ge=1, le=65535)
    mlflow_port: int = Field(default=5000, ge=1, le=65535)
    worker_port: int = Field(default=4201, ge=1, le=65535)  # the worker's /health endpoint
    receiver_port: int = Field(default=4202, ge=1, le=65535)  # MLflow webhooks → Prefect events
    postgres_port: int = Field(default=4203, ge=1, le=65535)  # the scale profile's PostgreSQL
    state_dir: Path = Path(".mlops")


_SECTION: ContextVar[dict[str, Any] | None] = ContextVar("mlops_stack_section", default=None)


class _WholeSource(PydanticBaseSettingsSource):
    """A source that returns its values whole from `__call__` (pydantic-settings asks per field only by default)."""

    def get_field_value(self, field: Any, field_name: str) -> tuple[Any, str, bool]:
        return None, field_name, False  # unused: __call__ answers for every field


class _Section(_WholeSource):
    """mlops.yaml's `stack:` section as written (given by `stack_settings_of` while it builds the settings)."""

    def __call__(self) -> dict[str, Any]:
        return dict(_SECTION.get() or {})


class _StateDirFiles(_WholeSource):
    """What the state dir recorded at its first `up`: the profile it was made with."""

    def __call__(self) -> dict[str, Any]:
        where = self.current_state.get("state_dir") or (_SECTION.get() or {}).get("state_dir") or Stack().state_dir
        profile = recorded_profile(resolve_path(Path(where)))
        return {"profile": profile} if profile else {}


class StackSettings(BaseSettings, Stack):
    """Where the local stack lives and listens (see the module's docstring for the order it is read in)."""

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="forbid", frozen=True)

    profile: Profile = "embedded"
    project_root: Path = PROJECT_ROOT  # read by prefect.yaml's pull step (MLOPS_PROJECT_ROOT)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,  # no .env file: the environment and the state dir say it all
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return init_settings, env_settings, _StateDirFiles(settings_cls), _Section(settings_cls)

    @field_validator("state_dir")
    @classmethod
    def _anchored(cls, path: Path) -> Path:
        return resolve_path(path)

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
    @property
    def prefect_url(self) -> str:  # the UI
        return f"http://{HOST}:{self.prefect_port}"

    @property
    def prefect_api_url(self) -> str:
        return f"{self.prefect_url}/api"

    @property
    def mlflow_uri(self) -> str:
        return f"http://{HOST}:{self.mlflow_port}"

    @property
    def worker_health_url(self) -> str:
        return f"http://{HOST}:{self.worker_port}/health"

    @property
    def receiver_url(self) -> str:
        return f"http://{HOST}:{self.receiver_port}"

    @property
    def webhook_url(self) -> str:  # MLflow's webhook → the receiver
        return f"{self.receiver_url}/mlflow/webhook"

    # Where each part keeps its files, below the state dir.
    prefect_home = property(lambda self: self.state_dir / "prefect")
    mlflow_dir = property(lambda self: self.state_dir / "mlflow")
    run_dir = property(lambda self: self.state_dir / "run")  # pid files, the stack lock
    log_dir = property(lambda self: self.state_dir / "logs")
    env_file = property(lambda self: self.state_dir / "env")  # `source` me
    profile_file = property(lambda self: self.state_dir / PROFILE_FILE)  # written by `up`
    secrets_dir = property(lambda self: self.state_dir / "secrets")  # 0700; each secret file 0600
    # The stack's credentials and keys, made by `ensure_credentials` (and `private_secret` where they are used).
    prefect_password_file = property(lambda self: self.secrets_dir / "prefect-api-password")
    mlflow_password_file = property(lambda self: self.secrets_dir / "mlflow-admin-password")
    mlflow_flask_key_file = property(lambda self: self.secrets_dir / "mlflow-flask-secret-key")  # MLflow's CSRF key
    mlflow_auth_config = property(lambda self: self.secrets_dir / "mlflow-basic-auth.ini")  # holds the admin password
    postgres_password_file = property(lambda self: self.secrets_dir / "postgres-password")
    webhook_secret_file = property(lambda self: self.secrets_dir / "webhook_secret")  # the receiver's HMAC secret
    webhook_key_file = property(lambda self: self.secrets_dir / "mlflow-webhook-fernet.key")  # MLflow encrypts with it

    def postgres_url(self, database: str, driver: str = "postgresql") -> str:
        """A client URL of one of the scale profile's databases, with its credentials: for environments only, never a log.

        Reads the password `ensure_credentials` made; before that (`mlops status` or `down` on a state dir `up` never
        finished) the URL has none, so a reader never writes a secret."""
        file = self.postgres_password_file
        password = quote(file.read_text().strip() if file.exists() else "", safe="")
        return f"{driver}://{POSTGRES_USER}:{password}@{HOST}:{self.postgres_port}/{database}"

    @property
    def warm_socket(self) -> Path:
        """The warm starter's Unix socket (mlops/platform/warmstart.py): in the run dir, unless that path is past the
        107 bytes a socket path may hold, then in a 0700 directory of the temp dir named after the state dir."""
        path = self.run_dir / "warmstart.sock"
        if len(str(path).encode()) < 100:
            return path
        digest = hashlib.sha256(str(self.state_dir).encode()).hexdigest()[:12]
        short = Path(tempfile.gettempdir()) / f"mlops-{os.getuid()}-{digest}"
        short.mkdir(mode=0o700, exist_ok=True)
        found = short.lstat()
        if found.st_uid != os.getuid() or found.st_mode & 0o077 or not short.is_dir() or short.is_symlink():
            raise PermissionError(
                f"{short} is not a private directory of this user: remove it, or use a shorter MLOPS_STATE_DIR"
            )
        return short / "warmstart.sock"

    def ensure_credentials(self) -> None:
        """Generate the stack's credentials once (`secrets_dir` 0700, each file 0600) and MLflow's auth config."""
        password = private_secret(self.mlflow_password_file)
        private_secret(self.prefect_password_file)
        private_secret(self.mlflow_flask_key_file)
        if self.profile == "scale":
            private_secret(self.postgres_password_file)  # the database user `mlops` (initdb and every client)
        users = (  # `%` is configparser's interpolation: a password may hold one once URL-quoted
            self.postgres_url("mlflow_auth").replace("%", "%%")
            if self.profile == "scale"
            else f"sqlite:///{self.mlflow_dir / 'basic_auth.db'}"
        )
        # Read by MLflow's auth app; the admin password only matters the first time (empty user store).
        # Each request's password check is a scrypt hash (156 ms of CPU here): uncached, the stack's MLflow server
        # spent 40% of a core on it under the test suite. One worker process, and users change only through its
        # API, so a cached check is never stale.
        write_private(
            self.mlflow_auth_config,
            "[mlflow]\n"
            "default_permission = NO_PERMISSIONS\n"  # a user MLflow knows but was granted nothing can do nothing
            f"database_uri = {users}\n"
            f"admin_username = {MLFLOW_ADMIN}\n"
            f"admin_password = {password}\n"
            "authorization_function = mlflow.server.auth:authenticate_request_basic_auth\n"
            f"auth_cache_ttl_seconds = {MLFLOW_AUTH_CACHE_TTL_S}\n",
        )

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

    def client_env(self) -> dict[str, str]:
        """What a shell or a flow run needs to use this stack, credentials included (also written to `<state>/env`, 0600)."""
        fields = self.model_dump(exclude={"postgres_port"} if self.profile == "embedded" else set())
        return {
            "PREFECT_API_URL": self.prefect_api_url,
            "MLFLOW_TRACKING_URI": self.mlflow_uri,
            # Every field, so that `mlops status|down`, prefect.yaml's pull step and the flows find this very stack.
            **{env_name(field): str(value) for field, value in fields.items()},
            # Flow runs heartbeat every 30 s (Prefect's default is 180): the zombie-run automation
            # (deployments/automations.yaml) crashes a run silent for 90 s, so every client of this stack sets it.
            HEARTBEAT_ENV: str(HEARTBEAT_SECONDS),
            **self.credential_env(),
        }


# Inherited settings that would point a process at somebody else's server, profile, store or stack: the stack's
# processes and CI's sandbox start without them (and then get this stack's, `client_env()`).
FOREIGN_ENV = (
    "PREFECT_API_URL", "PREFECT_API_KEY", PREFECT_AUTH_ENV, "PREFECT_SERVER_API_AUTH_STRING", "PREFECT_PROFILE",
    "PREFECT_PROFILES_PATH", "PREFECT_HOME", "PREFECT_UI_URL", "PREFECT_UI_API_URL",
    "PREFECT_API_DATABASE_CONNECTION_URL", "MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI", MLFLOW_USERNAME_ENV,
    MLFLOW_PASSWORD_ENV, "MLFLOW_TRACKING_TOKEN", "MLFLOW_AUTH_CONFIG_PATH", "MLFLOW_FLASK_SERVER_SECRET_KEY",
    *(env_name(field) for field in StackSettings.model_fields), HEARTBEAT_ENV,
)  # fmt: skip


def stack_settings_of(section: Stack, **explicit: Any) -> StackSettings:
    """The stack's settings for a config's `stack:` section: `explicit`, then the environment, the state dir's
    files, the section, the defaults."""
    token = _SECTION.set(section.model_dump(exclude_unset=True))
    try:
        return StackSettings(**explicit)
    finally:
        _SECTION.reset(token)


def recorded_profile(state_dir: Path) -> str | None:
    """The profile a state dir was made with; None before its first `up`."""
    try:
        return (state_dir / PROFILE_FILE).read_text().strip() or None
    except FileNotFoundError:
        return None
