"""The local stack behind `mlops up|down|status`: Prefect server, MLflow server and one process worker.

Everything binds to 127.0.0.1 and everything it writes (databases, artifacts, logs, pid files,
secrets) lives under the state dir, `.mlops/` by default. Each part runs detached in its own
session and is tracked by a pid file, so `down` stops it with all its children. Both servers
require credentials (Prefect's API auth string, MLflow's basic-auth app), generated under
`<state>/secrets/` and given to every client through its environment. Where the stack
lives and listens is mlops/platform/settings.py's (`StackSettings` and `stack_settings` are
re-exported here for the CLI, the demo and the bench).
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import psutil

from mlops.config import load_config
from mlops.platform import processes
from mlops.platform.settings import (
    FOREIGN_ENV,
    HOST,
    PORT_ENV,
    PREFECT_AUTH_ENV,
    StackSettings,
    stack_settings,
    write_private,
)

WORK_POOL = "local"
RECONCILE_DEPLOYMENT = "delivery-reconciliation/reconcile"  # prefect.yaml
SERVER_START_TIMEOUT = 180.0  # seconds; each server alone answers in ≈ 20-30 s
WORKER_START_TIMEOUT = 60.0
CLI_TIMEOUT = 300.0
STOP_TIMEOUT = 20.0
SERVICE_PID_SLACK = 30.0  # seconds a model service may have started before Terraform wrote its pid file


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

    def running(self) -> processes.PidRecord | None:
        return processes.running(self.pid_file)

    def healthy(self) -> bool:
        return processes.http_ok(self.health_url)


def _bin(name: str) -> str:
    """An executable from this interpreter's environment (the venv), else from PATH."""
    here = Path(sys.executable).parent / name
    return str(here) if here.exists() else (shutil.which(name) or name)


def _base_env(s: StackSettings) -> dict[str, str]:
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


def _webhook_key(s: StackSettings) -> str:
    """The Fernet key MLflow encrypts webhook secrets with: made once, kept in `<state>/secrets` (0600)."""
    path = s.secrets_dir / "mlflow-webhook-fernet.key"
    if not path.exists():
        from cryptography.fernet import Fernet

        s.secrets_dir.mkdir(parents=True, exist_ok=True)
        s.secrets_dir.chmod(0o700)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:  # another `up` made it first
            return path.read_text().strip()
        with os.fdopen(fd, "w") as out:
            out.write(Fernet.generate_key().decode())
    return path.read_text().strip()


def parts(s: StackSettings, webhook_key: str = "") -> dict[str, Part]:
    """The stack's processes: `prefect`, `mlflow`, `worker`, `receiver`; `webhook_key` is only needed to start MLflow."""
    base = _base_env(s)
    prefect = _bin("prefect")
    auth_string = s.credential_env().get(PREFECT_AUTH_ENV, "")  # "" before `up` made the credentials
    flask_key = s.mlflow_flask_key_file.read_text().strip() if s.mlflow_flask_key_file.exists() else ""

    def part(name: str, command: list[str], env: dict[str, str], cwd: Path, port: int, health: str) -> Part:
        slug = name.replace(" ", "-")
        return Part(name, command, env, cwd, port, health, s.run_dir / f"{slug}.pid", s.log_dir / f"{slug}.log")

    server_env = base | {
        "PREFECT_API_DATABASE_CONNECTION_URL": f"sqlite+aiosqlite:///{s.prefect_home / 'prefect.db'}",
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
    }
    worker_env = base | {
        "PREFECT_WORKER_QUERY_SECONDS": "1",  # event → flow run latency (default 10 s)
        "PREFECT_WORKER_WEBSERVER_HOST": HOST,
        "PREFECT_WORKER_WEBSERVER_PORT": str(s.worker_port),
    }
    return {
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
            [
                _bin("mlflow"), "server", "--host", HOST, "--port", str(s.mlflow_port),
                "--backend-store-uri", f"sqlite:///{s.mlflow_dir / 'mlflow.db'}",
                "--artifacts-destination", str(s.mlflow_dir / "artifacts"),
                "--serve-artifacts",
                "--app-name", "basic-auth",
                "--workers", "1",  # one process: SQLite has one writer anyway
            ],  # fmt: skip
            mlflow_env,
            s.mlflow_dir,
            s.mlflow_port,
            f"{s.mlflow_uri}/health",
        ),
        "worker": part(
            "worker",
            [prefect, "worker", "start", "--pool", WORK_POOL, "--name", f"{WORK_POOL}-worker", "--with-healthcheck"],
            worker_env,
            s.project_root,
            s.worker_port,
            s.worker_health_url,
        ),
        "receiver": part(
            "webhook receiver",
            [sys.executable, "-m", "deployments.mlflow_events", "--host", HOST, "--port", str(s.receiver_port),
             "--secret-file", str(s.webhook_secret_file)],  # fmt: skip
            base,
            s.project_root,
            s.receiver_port,
            f"http://{HOST}:{s.receiver_port}/health",
        ),
    }


def part_pids(s: StackSettings) -> dict[str, set[int]]:
    """The live processes of each part: the pid-file process and its descendants."""
    return {key: processes.tree_pids(part.pid_file) for key, part in parts(s).items()}


def _check_ports(by_key: dict[str, Part]) -> None:
    """Fail before starting anything when a part that is not running would find its port taken."""
    taken = [
        f"{part.name}: port {part.port} (set {PORT_ENV[key]})"
        for key, part in by_key.items()
        if part.running() is None and processes.port_in_use(HOST, part.port)
    ]
    if taken:
        raise StackError(
            "ports taken by processes this stack did not start (another stack? another state dir?):\n  "
            + "\n  ".join(taken)
        )


def _start(part: Part) -> str:
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


def _await_healthy(part: Part, timeout: float) -> None:
    """Wait until `part` answers its health URL; raise with the log's tail if it dies or the deadline passes."""
    started = time.monotonic()
    if processes.wait_for_http(part.health_url, timeout=timeout, still_alive=lambda: part.running() is not None):
        print(f"  {part.name}: healthy at {part.health_url} ({time.monotonic() - started:.1f} s)", flush=True)
        return
    why = "exited" if part.running() is None else f"did not answer within {timeout:.0f} s"
    raise StackError(
        f"{part.name} {why}: {part.health_url}\n--- last lines of {part.log_file}:\n{processes.tail(part.log_file)}"
    )


def _prefect_cli(s: StackSettings, env: dict[str, str], *args: str, ok_if: str | None = None) -> str:
    """Run a `prefect` command against this stack from the repo root; output is appended to logs/cli.log."""
    cmd = [_bin("prefect"), "--no-prompt", *args]
    proc = subprocess.run(
        cmd, env=env, cwd=s.project_root, capture_output=True, text=True, timeout=CLI_TIMEOUT, check=False
    )
    output = proc.stdout + proc.stderr
    s.log_dir.mkdir(parents=True, exist_ok=True)
    with open(s.log_dir / "cli.log", "a") as log:
        log.write(f"\n--- {time.strftime('%Y-%m-%d %H:%M:%S')} {' '.join(cmd)} (exit {proc.returncode})\n{output}")
    if proc.returncode != 0 and not (ok_if and ok_if in output):
        raise StackError(f"`prefect {' '.join(args)}` failed (exit {proc.returncode}):\n{output[-4000:]}")
    return output


def _ensure_work_pool(s: StackSettings, env: dict[str, str]) -> str:
    """Create the process work pool unless it exists (a plain GET: the CLI costs seconds to start)."""
    try:
        response = httpx.get(f"{s.prefect_api_url}/work_pools/{WORK_POOL}", auth=_prefect_auth(s), timeout=10)
    except httpx.HTTPError as exc:
        raise StackError(f"work pool {WORK_POOL!r}: cannot reach Prefect at {s.prefect_api_url}: {exc}") from None
    if response.status_code == 200:
        return "exists"
    if response.status_code != 404:
        raise StackError(f"work pool {WORK_POOL!r}: Prefect answered {response.status_code}: {response.text[:500]}")
    _prefect_cli(s, env, "work-pool", "create", WORK_POOL, "--type", "process", ok_if="already exists")
    return "created"


def _prefect_auth(s: StackSettings) -> httpx.BasicAuth:
    """This stack's Prefect API credentials for a plain httpx call."""
    user, _, password = s.credential_env()[PREFECT_AUTH_ENV].partition(":")
    return httpx.BasicAuth(user, password)


def _require_authentication(s: StackSettings) -> None:
    """Fail when a server refuses no anonymous caller: one started before the stack had credentials still runs."""
    probes = {"prefect server": ("POST", f"{s.prefect_api_url}/flows/filter"),
              "mlflow server": ("GET", f"{s.mlflow_uri}/api/2.0/mlflow/registered-models/search")}
    for name, (method, url) in probes.items():
        try:
            answer = httpx.request(method, url, json={}, timeout=10).status_code
        except httpx.HTTPError as exc:
            raise StackError(f"{name}: cannot check that it requires credentials: {exc}") from None
        if answer not in (401, 403):
            raise StackError(f"{name} answers an anonymous caller (HTTP {answer}): it was started without "
                             "authentication; run `mlops down`, then `mlops up`")


@contextmanager
def _as_client(s: StackSettings) -> Iterator[None]:
    """This process as a client of the stack: MLflow's client, and the services Terraform starts, read credentials from os.environ."""
    credentials = s.credential_env()
    saved = {key: os.environ.get(key) for key in credentials}
    os.environ.update(credentials)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def _write_env_file(s: StackSettings) -> None:
    lines = ["# `source` me: points the prefect, mlflow and mlops commands at this local stack."]
    lines += [f"export {key}={shlex.quote(value)}" for key, value in s.client_env().items()]
    # The README's `prefect ...`, `mlflow ...` and `mlops ...` commands are this venv's.
    lines.append(f'export PATH={shlex.quote(str(Path(sys.executable).parent))}:"$PATH"')
    write_private(s.env_file, "\n".join(lines) + "\n")  # it holds the credentials: 0600


@contextmanager
def _exclusive(s: StackSettings) -> Iterator[None]:
    """One `up` or `down` at a time per state dir (two concurrent `up`s would race for the ports)."""
    s.run_dir.mkdir(parents=True, exist_ok=True)
    with open(s.run_dir / "stack.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def up(settings: StackSettings | None = None) -> int:
    """Bring the local stack up (idempotent); 0 when every part is healthy and deployed."""
    s = settings or stack_settings()
    with _exclusive(s):
        return _up(s)


def _up(s: StackSettings) -> int:
    started = time.monotonic()
    try:
        for directory in (s.prefect_home, s.mlflow_dir / "artifacts", s.run_dir, s.log_dir):
            directory.mkdir(parents=True, exist_ok=True)
        s.ensure_credentials()
        by_key = parts(s, _webhook_key(s))
        prefect, mlflow, worker, receiver = (by_key[k] for k in ("prefect", "mlflow", "worker", "receiver"))
        _check_ports(by_key)
        # Both servers need 20-30 s to answer: start them together, and deploy while MLflow warms up.
        for part in (prefect, mlflow):
            print(f"  {part.name}: {_start(part)}, log {part.log_file}", flush=True)
        _await_healthy(prefect, SERVER_START_TIMEOUT)
        client_env = _base_env(s)
        print(f"  work pool {WORK_POOL!r}: {_ensure_work_pool(s, client_env)}", flush=True)
        print(f"  {worker.name}: {_start(worker)}, log {worker.log_file}", flush=True)
        step = time.monotonic()
        _prefect_cli(s, client_env, "deploy", "--all", "--prefect-file", str(s.project_root / "prefect.yaml"))
        print(f"  deployments: applied from prefect.yaml ({time.monotonic() - step:.1f} s)", flush=True)
        print(f"  {receiver.name}: {_start(receiver)}, log {receiver.log_file}", flush=True)
        _await_healthy(worker, WORKER_START_TIMEOUT)
        _await_healthy(mlflow, SERVER_START_TIMEOUT)
        _await_healthy(receiver, WORKER_START_TIMEOUT)
        _require_authentication(s)
        with _as_client(s):
            print(f"  MLflow webhook: {_ensure_webhook(s)} → {s.webhook_url}", flush=True)
            _write_env_file(s)
            _restore_model_services(s)
            print(f"  zombie-run automation: {_ensure_zombie_automation(s, client_env)}", flush=True)
            print(f"  delivery reconciliation: {_reconcile_now(s, client_env)}", flush=True)
    except StackError as exc:
        print(f"mlops up: {exc}", file=sys.stderr)
        print("Parts that started keep running: `mlops status`, `mlops down`.", file=sys.stderr)
        return 1
    print(
        f"\nLocal stack up in {time.monotonic() - started:.1f} s.\n"
        f"  Prefect UI  {s.prefect_url}\n"
        f"  MLflow UI   {s.mlflow_uri}\n"
        f"Try:\n"
        f"  source {_shown(s.env_file)}\n"
        f"  prefect deployment run continuous-training/retrain",
        flush=True,
    )
    return 0


def down(settings: StackSettings | None = None) -> int:
    """Stop every part and model service by pid; data and Terraform state stay in the state dir. Harmless when nothing runs."""
    s = settings or stack_settings()
    by_key = parts(s)
    if not s.run_dir.exists():
        print(f"  nothing to stop: no {s.run_dir}", flush=True)
        return 0
    with _exclusive(s):
        _stop(by_key["worker"])  # first, while it can still tell the server it is going (and no CD starts a service)
        _stop_model_services(s)
        with ThreadPoolExecutor(max_workers=3) as pool:  # the servers take a few seconds each to shut down
            list(pool.map(_stop, [by_key["prefect"], by_key["mlflow"], by_key["receiver"]]))
    return 0


def _ensure_zombie_automation(s: StackSettings, env: dict[str, str]) -> str:
    """Prefect's zombie-run automation (deployments/automations.yaml): runs silent for 90 s become Crashed."""
    from mlops.platform.zombies import ensure_zombie_automation

    try:
        return ensure_zombie_automation(s.prefect_api_url, env)
    except Exception as exc:  # Prefect's client raises several types; any of them stops `up`
        raise StackError(f"cannot create the zombie-run automation at {s.prefect_api_url}: {exc}") from None


def _reconcile_now(s: StackSettings, env: dict[str, str]) -> str:
    """Start one delivery reconciliation: versions registered while the stack was down get their CD run."""
    output = _prefect_cli(s, env, "deployment", "run", RECONCILE_DEPLOYMENT)
    found = re.search(r"UUID:\s*([0-9a-f-]{36})", output)
    return f"started (flow run {found.group(1)})" if found else "started"


def _ensure_webhook(s: StackSettings) -> str:
    """Point MLflow's `model_version.created` webhook at the receiver (shared HMAC secret, 0600 file)."""
    from mlflow.tracking import MlflowClient

    from deployments.mlflow_events import ensure_webhook, read_or_create_secret

    secret = read_or_create_secret(s.webhook_secret_file)
    try:
        return f"registered (id {ensure_webhook(MlflowClient(s.mlflow_uri, registry_uri=s.mlflow_uri), s.webhook_url, secret)})"
    except Exception as exc:  # MLflow's client raises several types; any of them stops `up`
        raise StackError(f"cannot register the MLflow webhook at {s.mlflow_uri}: {exc}") from None


def _stop_model_services(s: StackSettings) -> None:
    """Stop the staging/production services by pid; their Terraform state stays, so `up` brings them back."""
    from mlops.adapters import environments

    config = load_config()
    for name in environments.NAMES:
        try:
            served = environments.current_service(config, name, state_dir=s.state_dir)
        except Exception as exc:  # an unreadable state must not keep the rest of the stack running
            print(f"  {name} model service: cannot read its state: {exc}", file=sys.stderr, flush=True)
            continue
        if served:
            stopped = _stop_service(s, name, Path(served["pid_file"]))
            what = f"stopped (pid {stopped})" if stopped else "not running"
            print(f"  {name} model service: {what}; v{served['model_version']} kept in its state", flush=True)


def service_record(pid_file: Path) -> processes.PidRecord | None:
    """The live service a model-service pid file names, as a pid record; None when it is gone.

    Terraform writes a bare pid (`echo $!` right after `setsid`), so a pid recycled since is told
    apart by the process having started just before its pid file was written, and leading its group.
    """
    try:
        pid = int(pid_file.read_text().strip())
        proc = psutil.Process(pid)
        started, written = proc.create_time(), pid_file.stat().st_mtime
        leads_group = os.getpgid(pid) == pid
        command = proc.cmdline()
    except (OSError, ValueError, psutil.Error):
        return None
    if not leads_group or not written - SERVICE_PID_SLACK <= started <= written + 1.0:
        return None
    return processes.PidRecord(pid=pid, create_time=started, command=command)


def _stop_service(s: StackSettings, environment: str, pid_file: Path) -> int | None:
    """Stop one model service with its process group; returns its pid, None when it was not running."""
    record = service_record(pid_file)
    pid_file.unlink(missing_ok=True)  # stale from now on; Terraform's destroy reads a missing one as "stopped"
    if record is None:
        return None
    # Adopted into the stack's pid files for this one stop, so it gets the parts' TERM-wait-KILL.
    adopted = s.run_dir / f"model-service-{environment}.pid"
    adopted.write_text(json.dumps(record.__dict__))
    processes.stop(adopted, timeout=STOP_TIMEOUT)
    return record.pid


def _restore_model_services(s: StackSettings) -> None:
    """Bring staging and production back on what their state says, production on the `champion` alias."""
    from mlflow.tracking import MlflowClient

    from mlops.adapters import environments, registry

    config = load_config()
    name = config.tracking.model_name
    try:
        champion = registry.champion(MlflowClient(s.mlflow_uri, registry_uri=s.mlflow_uri), name)
        served = {env: environments.current_service(config, env, state_dir=s.state_dir) for env in environments.NAMES}
    except Exception as exc:  # MLflow and Terraform raise several types; any of them stops `up`
        raise StackError(f"model services: cannot read what they serve: {exc}") from None
    version = champion.version if champion else None
    targets = [environments.restore_target(env, served[env], name, version) for env in environments.NAMES]

    def restore(target: environments.Restore) -> str | None:
        if target.reason:
            print(f"  {target.environment} model service: {target.reason}", flush=True)
        try:
            endpoint, seconds = environments.restore_service(config, target, state_dir=s.state_dir, tracking_uri=s.mlflow_uri)
        except Exception as exc:  # Terraform and the health wait raise several types; report them all
            return f"{target.environment} v{target.version}: {exc}"
        print(f"  {target.environment} model service: {target.model_name} v{target.version} healthy at {endpoint} "
              f"({seconds:.1f} s)", flush=True)
        return None

    with ThreadPoolExecutor(max_workers=len(environments.NAMES)) as pool:  # each waits seconds for its model to load
        failures = [failure for failure in pool.map(restore, [t for t in targets if t]) if failure]
    if failures:
        raise StackError("model services did not come back:\n  " + "\n  ".join(failures))


def _stop(part: Part) -> None:
    record = processes.read_pid_file(part.pid_file)
    started = time.monotonic()
    if processes.stop(part.pid_file, timeout=STOP_TIMEOUT):
        pid = record.pid if record else "?"
        print(f"  {part.name}: stopped (pid {pid}, {time.monotonic() - started:.1f} s)", flush=True)
    else:
        print(f"  {part.name}: not running", flush=True)


def status(settings: StackSettings | None = None) -> int:
    """One line per part, then per environment; 0 when all parts and every applied environment are healthy."""
    s = settings or stack_settings()
    all_up = True
    for part in parts(s).values():
        record = part.running()
        healthy = part.healthy() if record else False
        all_up &= healthy
        pid = record.pid if record else "-"
        print(
            f"{part.name:<17} pid {pid!s:<8} alive {'yes' if record else 'no ':<4} "
            f"health {'ok  ' if healthy else 'FAIL'} {part.health_url}"
        )
    all_up &= _environments_status(s)
    return 0 if all_up else 1


def _environments_status(s: StackSettings) -> bool:
    """One line per environment (what its state says it serves, and whether it answers); False if an applied one does not."""
    from mlops.adapters import environments, service_checks

    config = load_config()
    all_up = True
    for name in environments.NAMES:
        try:
            served = environments.current_service(config, name, state_dir=s.state_dir)
        except Exception as exc:  # Terraform raises several types; the line says why
            print(f"{name:<17} state unreadable: {str(exc).splitlines()[0]}")
            all_up = False
            continue
        if not served:
            print(f"{name:<17} not applied")
            continue
        healthy = service_checks.is_healthy(served["endpoint"])
        all_up &= healthy
        print(f"{name:<17} version {served['model_version']!s:<4} health {'ok  ' if healthy else 'FAIL'} {served['endpoint']}")
    return all_up


def _shown(path: Path) -> str:
    """`path` relative to the working directory when it is below it, for copy-pasteable hints."""
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)
