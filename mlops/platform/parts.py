"""The stack's processes: which parts there are, how each starts, answers and stops (by pid file)."""

from __future__ import annotations

import os
import shutil
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from mlops import processes
from mlops.config.stack import FOREIGN_ENV, HOST, PREFECT_AUTH_ENV, StackSettings, env_name, private_secret
from mlops.platform import warmstart

STOP_TIMEOUT = 20.0  # seconds a part gets to stop after TERM, before KILL


class StackError(RuntimeError):
    """The stack could not be brought up; the message says which part and why."""


@dataclass(frozen=True)
class Part:
    """One long-running process of the stack."""

    name: str
    command: list[str]
    env: dict[str, str]
    cwd: Path
    port: int
    health_url: str
    pid_file: Path
    log_file: Path
    probe: Callable[[], bool] | None = None  # how it is healthy when not by GET health_url (PostgreSQL)

    def running(self) -> processes.PidRecord | None:
        return processes.running(self.pid_file)

    def healthy(self) -> bool:
        return self.probe() if self.probe else processes.http_ok(self.health_url)


def bin_path(name: str) -> str:
    """An executable from this interpreter's environment (the venv), else from PATH."""
    here = Path(sys.executable).parent / name
    return str(here) if here.exists() else (shutil.which(name) or name)


def base_env(s: StackSettings) -> dict[str, str]:
    """The environment of every process of the stack: isolated from the user's Prefect profile."""
    env = {k: v for k, v in os.environ.items() if k not in FOREIGN_ENV}
    env.update(s.client_env())
    env.update(
        PATH=os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")]),
        PREFECT_HOME=str(s.prefect_home),
        PREFECT_UI_URL=s.prefect_url,
        MLFLOW_DISABLE_TELEMETRY="true",
    )
    return env


def webhook_key(s: StackSettings) -> str:
    """The Fernet key MLflow encrypts webhook secrets with: made once, kept in `<state>/secrets` (0600)."""
    from cryptography.fernet import Fernet

    return private_secret(s.webhook_key_file, lambda: Fernet.generate_key().decode())


def parts(s: StackSettings, webhook_key: str = "") -> dict[str, Part]:
    """The stack's processes: `prefect`, `mlflow`, `worker`, `receiver` (and `postgres` first in the scale profile);
    `webhook_key` is only needed to start MLflow."""
    from mlops.platform import deploy, postgres  # both build on this module

    base = base_env(s)
    prefect = bin_path("prefect")
    auth_string = s.credential_env().get(PREFECT_AUTH_ENV, "")  # "" before `up` made the credentials
    flask_key = s.mlflow_flask_key_file.read_text().strip() if s.mlflow_flask_key_file.exists() else ""

    def part(
        name: str,
        command: list[str],
        env: dict[str, str],
        cwd: Path,
        port: int,
        health: str,
        probe: Callable[[], bool] | None = None,
    ) -> Part:
        slug = name.replace(" ", "-")
        return Part(name, command, env, cwd, port, health, s.run_dir / f"{slug}.pid", s.log_dir / f"{slug}.log", probe)

    scale = s.profile == "scale"
    server_env = base | {
        "PREFECT_API_DATABASE_CONNECTION_URL": s.postgres_url("prefect", "postgresql+asyncpg")
        if scale
        else f"sqlite+aiosqlite:///{s.prefect_home / 'prefect.db'}",
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_UI_API_URL": s.prefect_api_url,
        "PREFECT_SERVER_API_AUTH_STRING": auth_string,  # every API call but /health needs it
    }
    mlflow_env = base | {
        # Registry webhooks to a receiver on this machine over plain http.
        "MLFLOW_WEBHOOK_ALLOW_PRIVATE_IPS": "true",
        "MLFLOW_WEBHOOK_ALLOWED_SCHEMES": "http,https",
        "MLFLOW_WEBHOOK_SECRET_ENCRYPTION_KEY": webhook_key,
        # The server caches the webhook list per event for 60 s by default, so a webhook created
        # just after an event would miss the next registrations; a local stack can afford to re-read.
        "MLFLOW_WEBHOOK_CACHE_TTL": "1",
        # Server "jobs" run GenAI features (scorers, prompt optimisation) in 8 extra processes.
        "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false",
        # The basic-auth app: its config (admin user, NO_PERMISSIONS for anyone else) and CSRF key.
        "MLFLOW_AUTH_CONFIG_PATH": str(s.mlflow_auth_config),
        "MLFLOW_FLASK_SERVER_SECRET_KEY": flask_key,
        # The tracking and registry store; artifacts stay files (--artifacts-destination), apart from it.
        "MLFLOW_BACKEND_STORE_URI": s.postgres_url("mlflow") if scale else f"sqlite:///{s.mlflow_dir / 'mlflow.db'}",
    }
    worker_env = base | {
        "PREFECT_WORKER_QUERY_SECONDS": "1",  # event → flow run latency (default 10 s)
        "PREFECT_WORKER_WEBSERVER_HOST": HOST,
        "PREFECT_WORKER_WEBSERVER_PORT": str(s.worker_port),
        warmstart.SOCKET_ENV: str(s.warm_socket),  # the pool's command (warmstart's client) hands each run to it
    }
    pool, pool_env = deploy.WORK_POOL, deploy.pool_env(s.project_root)  # prefect.yaml's `local` work pool
    found = {}
    if scale:
        bins = postgres.bin_dir() or Path("/usr/lib/postgresql/<major>/bin")  # installed by `up` when missing
        found["postgres"] = part(
            "postgres",
            postgres.server_command(s, bins),
            base,
            s.state_dir / "postgres",
            s.postgres_port,
            postgres.shown_url(s),
            probe=lambda: postgres.healthy(s),
        )
    mlflow_command = [
        bin_path("mlflow"), "server", "--host", HOST, "--port", str(s.mlflow_port),
        "--artifacts-destination", str(s.mlflow_dir / "artifacts"), "--serve-artifacts", "--app-name", "basic-auth",
        "--workers", "1",  # one process: SQLite has one writer; on PostgreSQL, one saves memory on 2 cores
    ]  # fmt: skip
    receiver_command = [
        sys.executable, "-m", "deployments.mlflow_events", "--host", HOST, "--port", str(s.receiver_port),
        "--secret-file", str(s.webhook_secret_file),
    ]  # fmt: skip
    return found | {
        "prefect": part(
            "prefect server",
            [prefect, "server", "start", "--host", HOST, "--port", str(s.prefect_port)],
            server_env,
            s.prefect_home,
            s.prefect_port,
            f"{s.prefect_api_url}/health",
        ),
        "mlflow": part(
            "mlflow server",
            mlflow_command,
            mlflow_env,
            s.mlflow_dir,
            s.mlflow_port,
            f"{s.mlflow_uri}/health",
        ),
        "warm": part(  # before the worker: its runs start from this preloaded process
            "warm starter",
            [sys.executable, "-m", "mlops.platform.warmstart", "serve", str(s.warm_socket), str(s.project_root)],
            worker_env | pool_env,  # what the flow-run processes inherit at their start (malloc reads it only then)
            s.project_root,
            0,
            f"unix:{s.warm_socket}",
            probe=lambda: warmstart.ping(s.warm_socket),
        ),
        "worker": part(
            "worker",
            [prefect, "worker", "start", "--pool", pool, "--name", f"{pool}-worker", "--with-healthcheck"],
            worker_env,
            s.project_root,
            s.worker_port,
            s.worker_health_url,
        ),
        "receiver": part(
            "webhook receiver",
            receiver_command,
            base,
            s.project_root,
            s.receiver_port,
            f"http://{HOST}:{s.receiver_port}/health",
        ),
    }


def part_pids(s: StackSettings) -> dict[str, set[int]]:
    """The live processes of each part: the pid-file process and its descendants."""
    return {key: processes.tree_pids(part.pid_file) for key, part in parts(s).items()}


def check_ports(by_key: dict[str, Part]) -> None:
    """Fail before starting anything when a part that is not running would find its port taken."""
    taken = [
        f"{part.name}: port {part.port} (set {env_name(f'{key}_port')})"
        for key, part in by_key.items()
        if part.port and part.running() is None and processes.port_in_use(HOST, part.port)
    ]
    if taken:
        raise StackError(
            "ports taken by processes this stack did not start (another stack? another state dir?):\n  "
            + "\n  ".join(taken)
        )


def start(part: Part) -> str:
    """Start `part` unless it already runs; returns what happened, for the log line."""
    record = part.running()
    if record:
        return f"already running (pid {record.pid})"
    part.pid_file.unlink(missing_ok=True)  # stale
    part.cwd.mkdir(parents=True, exist_ok=True)
    try:
        record = processes.start_detached(
            part.command, pid_file=part.pid_file, log_file=part.log_file, env=part.env, cwd=part.cwd
        )
    except OSError as exc:
        raise StackError(f"{part.name}: cannot start {part.command[0]}: {exc}") from None
    return f"started (pid {record.pid})"


def await_healthy(part: Part, timeout: float) -> None:
    """Wait until `part` is healthy; a StackError with its log's tail if it dies or the deadline passes."""
    try:
        seconds = processes.await_healthy(
            part.pid_file, part.healthy, timeout=timeout, what=f"{part.name}: {part.health_url}", log=part.log_file
        )
    except processes.NotHealthy as exc:
        raise StackError(str(exc)) from None
    print(f"  {part.name}: healthy at {part.health_url} ({seconds:.1f} s)", flush=True)


def stop(part: Part) -> None:
    record = processes.read_pid_file(part.pid_file)
    started = time.monotonic()
    if processes.stop(part.pid_file, timeout=STOP_TIMEOUT):
        pid = record.pid if record else "?"
        print(f"  {part.name}: stopped (pid {pid}, {time.monotonic() - started:.1f} s)", flush=True)
    else:
        print(f"  {part.name}: not running", flush=True)
