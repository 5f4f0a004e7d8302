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
import os
import shlex
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

import httpx

from mlops.config import load_config, stack_use_cases
from mlops.platform import parts as stack_parts
from mlops.platform import services, warmstart
from mlops.platform.parts import WORK_POOL, Part, StackError, part_pids, parts  # noqa: F401 - re-exported
from mlops.platform.services import service_record  # noqa: F401 - re-exported
from mlops.platform.settings import (
    PREFECT_AUTH_ENV,
    PROFILE_ENV,
    StackSettings,
    recorded_profile,
    stack_settings,
    write_private,
)
from mlops.platform.status import status  # noqa: F401 - re-exported

RECONCILE_DEPLOYMENT = "delivery-reconciliation/reconcile"  # prefect.yaml
SERVER_START_TIMEOUT = 180.0  # seconds; each server alone answers in ≈ 20-30 s
WORKER_START_TIMEOUT = 60.0
CLI_TIMEOUT = 300.0


def _prefect_cli(s: StackSettings, env: dict[str, str], *args: str, ok_if: str | None = None) -> str:
    """Run a `prefect` command against this stack from the repo root; output is appended to logs/cli.log."""
    cmd = [stack_parts.bin_path("prefect"), "--no-prompt", *args]
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
    """The process work pool, created unless it exists (a plain GET: the CLI costs seconds to start), with warmstart's
    client as its command (the runs start from the warm starter's preloaded process)."""
    url = f"{s.prefect_api_url}/work_pools/{WORK_POOL}"
    try:
        response = httpx.get(url, auth=_prefect_auth(s), timeout=10)
        outcome = "exists"
        if response.status_code == 404:
            _prefect_cli(s, env, "work-pool", "create", WORK_POOL, "--type", "process", ok_if="already exists")
            response, outcome = httpx.get(url, auth=_prefect_auth(s), timeout=10), "created"
        if response.status_code != 200:
            raise StackError(f"work pool {WORK_POOL!r}: Prefect answered {response.status_code}: {response.text[:500]}")
        template = response.json()["base_job_template"]
        command = template["variables"]["properties"]["command"]
        if command.get("default") != stack_parts.warm_command():
            command["default"] = stack_parts.warm_command()
            patched = httpx.patch(url, json={"base_job_template": template}, auth=_prefect_auth(s), timeout=10)
            if patched.status_code >= 300:
                raise StackError(
                    f"work pool {WORK_POOL!r}: setting its command failed ({patched.status_code}): {patched.text[:500]}"
                )
            outcome += ", command: warm start"
    except httpx.HTTPError as exc:
        raise StackError(f"work pool {WORK_POOL!r}: cannot reach Prefect at {s.prefect_api_url}: {exc}") from None
    return outcome


def _prefect_auth(s: StackSettings) -> httpx.BasicAuth:
    """This stack's Prefect API credentials for a plain httpx call."""
    user, _, password = s.credential_env()[PREFECT_AUTH_ENV].partition(":")
    return httpx.BasicAuth(user, password)


def _require_authentication(s: StackSettings) -> None:
    """Fail when a server refuses no anonymous caller: one started before the stack had credentials still runs."""
    probes = {
        "prefect server": ("POST", f"{s.prefect_api_url}/flows/filter"),
        "mlflow server": ("GET", f"{s.mlflow_uri}/api/2.0/mlflow/registered-models/search"),
    }
    for name, (method, url) in probes.items():
        try:
            answer = httpx.request(method, url, json={}, timeout=10).status_code
        except httpx.HTTPError as exc:
            raise StackError(f"{name}: cannot check that it requires credentials: {exc}") from None
        if answer not in (401, 403):
            raise StackError(
                f"{name} answers an anonymous caller (HTTP {answer}): it was started without "
                "authentication; run `mlops down`, then `mlops up`"
            )


@contextmanager
def _as_client(s: StackSettings) -> Iterator[None]:
    """This process as a client of the stack: MLflow's client, and the services Terraform starts, read credentials from
    os.environ; the services start from the warm starter (warmstart's client finds it by MLOPS_WARM_SOCKET)."""
    credentials = {**s.credential_env(), warmstart.SOCKET_ENV: str(s.warm_socket)}
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
        _keep_profile(s)
        s.ensure_credentials()
        by_key = parts(s, stack_parts.webhook_key(s))
        stack_parts.check_ports(by_key)
        if s.profile == "scale":  # Prefect's and MLflow's stores: up before either server starts
            by_key = _postgres_up(s)
        prefect, mlflow, warm, worker, receiver = (
            by_key[k] for k in ("prefect", "mlflow", "warm", "worker", "receiver")
        )
        # Both servers need 20-30 s to answer: start them together (the warm starter imports meanwhile), and
        # deploy while MLflow warms up.
        for part in (prefect, mlflow, warm):
            print(f"  {part.name}: {stack_parts.start(part)}, log {part.log_file}", flush=True)
        stack_parts.await_healthy(prefect, SERVER_START_TIMEOUT)
        client_env = stack_parts.base_env(s)
        print(f"  work pool {WORK_POOL!r}: {_ensure_work_pool(s, client_env)}", flush=True)
        print(f"  {worker.name}: {stack_parts.start(worker)}, log {worker.log_file}", flush=True)
        step = time.monotonic()
        print(f"  deployments: {_deploy(s, client_env)} ({time.monotonic() - step:.1f} s)", flush=True)
        print(f"  {receiver.name}: {stack_parts.start(receiver)}, log {receiver.log_file}", flush=True)
        stack_parts.await_healthy(worker, WORKER_START_TIMEOUT)
        stack_parts.await_healthy(warm, WORKER_START_TIMEOUT)
        stack_parts.await_healthy(mlflow, SERVER_START_TIMEOUT)
        stack_parts.await_healthy(receiver, WORKER_START_TIMEOUT)
        _require_authentication(s)
        with _as_client(s):
            print(f"  MLflow webhook: {_ensure_webhook(s)} → {s.webhook_url}", flush=True)
            _write_env_file(s)
            services.restore_model_services(s)
            print(f"  zombie-run automation: {_ensure_zombie_automation(s, client_env)}", flush=True)
            print(f"  notifications: {_ensure_notifications(s, client_env)}", flush=True)
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
        stack_parts.stop(
            by_key["worker"]
        )  # first, while it can still tell the server it is going (and no CD starts a service)
        stack_parts.stop(by_key["warm"])  # its flow runs died with the worker's clients
        services.stop_model_services(s)
        with ThreadPoolExecutor(max_workers=3) as pool:  # the servers take a few seconds each to shut down
            list(pool.map(stack_parts.stop, [by_key["prefect"], by_key["mlflow"], by_key["receiver"]]))
        if "postgres" in by_key:
            stack_parts.stop(by_key["postgres"])  # last: the servers above were its clients
    return 0


def _keep_profile(s: StackSettings) -> None:
    """A state dir keeps the profile it was made with: the other one would start on empty stores beside the data."""
    recorded = recorded_profile(s.state_dir)
    if recorded and recorded != s.profile:
        raise StackError(
            f"{s.state_dir} holds a stack of the {recorded!r} profile, and {PROFILE_ENV}={s.profile!r} asks for the other: "
            f"unset {PROFILE_ENV} to use it, or give the {s.profile} stack its own MLOPS_STATE_DIR"
        )
    s.state_dir.mkdir(parents=True, exist_ok=True)
    s.profile_file.write_text(s.profile + "\n")


def _postgres_up(s: StackSettings) -> dict[str, Part]:
    """The scale profile's PostgreSQL installed, initialised, running and holding the stack's databases; the parts again."""
    from mlops.platform import postgres

    try:
        bins, installed = postgres.ensure_installed()
        print(f"  postgres: {installed} ({bins})", flush=True)
        print(f"  postgres: {postgres.ensure_cluster(s, bins)}", flush=True)
        by_key = parts(s, stack_parts.webhook_key(s))  # with the binaries' real path
        part = by_key["postgres"]
        print(f"  {part.name}: {stack_parts.start(part)}, log {part.log_file}", flush=True)
        stack_parts.await_healthy(part, SERVER_START_TIMEOUT)
        created = postgres.ensure_databases(s)
    except postgres.PostgresError as exc:
        raise StackError(f"postgres: {exc}") from None
    except Exception as exc:  # psycopg raises several types; any of them stops `up`
        raise StackError(f"postgres: cannot prepare the stack's databases at {postgres.shown_url(s)}: {exc}") from None
    print(
        f"  postgres: databases {', '.join(postgres.DATABASES)}"
        + (f" (created {', '.join(created)})" if created else ""),
        flush=True,
    )
    return by_key


def _deploy(s: StackSettings, env: dict[str, str]) -> str:
    """`prefect deploy --all`, keeping each schedule on or off as the user left it in the UI (mlops.platform.schedules).

    Skipped when what it would apply is what the last `up` applied (prefect.yaml, the flows' code
    that gives each deployment its parameter form, this checkout's path) and every deployment is
    still on the server: `prefect deploy` costs ≈ 8 s of CPU, and `up` runs after every restart.
    """
    from mlops.platform import automations, schedules

    applied, digest = s.prefect_home / "deployed.sha256", schedules.deployed_digest(s.project_root)
    others = [name for name in stack_use_cases() if name != load_config().name]  # the file's schedules run the default
    try:
        with automations.stack_client(s.prefect_api_url, env) as client:
            if applied.exists() and applied.read_text() == digest and schedules.all_deployed(s.project_root, client):
                return "unchanged since the last `up`"
            flags = schedules.remember(client)
            _prefect_cli(s, env, "deploy", "--all", "--prefect-file", str(s.project_root / "prefect.yaml"))
            schedules.copy_for_use_cases(client, others)
            kept = schedules.restore(client, flags)
    except StackError:
        raise
    except Exception as exc:  # Prefect's client raises several types; any of them stops `up`
        raise StackError(f"cannot read or restore the deployments' schedules at {s.prefect_api_url}: {exc}") from None
    applied.write_text(digest)
    return "applied from prefect.yaml" + (f"; kept as set in the UI: {', '.join(kept)}" if kept else "")


def _ensure_zombie_automation(s: StackSettings, env: dict[str, str]) -> str:
    """Prefect's zombie-run automation (deployments/automations.yaml): runs silent for 90 s become Crashed."""
    from mlops.platform.zombies import ensure_zombie_automation

    try:
        return ensure_zombie_automation(s.prefect_api_url, env)
    except Exception as exc:  # Prefect's client raises several types; any of them stops `up`
        raise StackError(f"cannot create the zombie-run automation at {s.prefect_api_url}: {exc}") from None


def _ensure_notifications(s: StackSettings, env: dict[str, str]) -> str:
    """The notification automations (deployments/notifications.yaml) for the config's webhook, or none without one."""
    from mlops.platform.notifications import ensure_notifications

    try:
        return ensure_notifications(s.prefect_api_url, env, load_config().notifications, s.mlflow_uri)
    except Exception as exc:  # Prefect's client raises several types; any of them stops `up`
        raise StackError(f"cannot apply the notification automations at {s.prefect_api_url}: {exc}") from None


def _reconcile_now(s: StackSettings, env: dict[str, str]) -> str:
    """Start one delivery reconciliation: versions registered while the stack was down get their CD run."""
    from mlops.platform import automations

    try:
        with automations.stack_client(s.prefect_api_url, env) as client:  # the API: the CLI costs seconds to start
            run = client.create_flow_run_from_deployment(client.read_deployment_by_name(RECONCILE_DEPLOYMENT).id)
    except Exception as exc:  # Prefect's client raises several types; any of them stops `up`
        raise StackError(f"cannot start {RECONCILE_DEPLOYMENT} at {s.prefect_api_url}: {exc}") from None
    return f"started (flow run {run.id})"


def _ensure_webhook(s: StackSettings) -> str:
    """Point MLflow's `model_version.created` webhook at the receiver (shared HMAC secret, 0600 file)."""
    from mlflow.tracking import MlflowClient

    from deployments.mlflow_events import ensure_webhook, read_or_create_secret

    secret = read_or_create_secret(s.webhook_secret_file)
    try:
        return f"registered (id {ensure_webhook(MlflowClient(s.mlflow_uri, registry_uri=s.mlflow_uri), s.webhook_url, secret)})"
    except Exception as exc:  # MLflow's client raises several types; any of them stops `up`
        raise StackError(f"cannot register the MLflow webhook at {s.mlflow_uri}: {exc}") from None


def _shown(path: Path) -> str:
    """`path` relative to the working directory when it is below it, for copy-pasteable hints."""
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)
