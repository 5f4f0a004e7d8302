"""The local stack behind `mlops up|down|status`: Prefect server, MLflow server and one process worker.

Everything binds to 127.0.0.1 and everything it writes (databases, artifacts, logs, pid files,
secrets) lives under the state dir, `.mlops/` by default. Each part runs detached in its own
session and is tracked by a pid file, so `down` stops it with all its children. Both servers
require credentials (Prefect's API auth string, MLflow's basic-auth app), generated under
`<state>/secrets/` and given to every client through its environment. Where the stack lives
and listens is its settings' (mlops/config/stack.py); which parts there are, mlops/platform/parts.py's.
"""

from __future__ import annotations

import fcntl
import os
import shlex
import sys
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

import httpx

from mlops.adapters.webhooks import ensure_webhook
from mlops.config import load_config, stack_settings
from mlops.config.stack import StackSettings, env_name, private_secret, recorded_profile, write_private
from mlops.platform import automations, deploy, notifications, services, warmstart, zombies
from mlops.platform import parts as stack_parts
from mlops.platform.parts import Part, StackError, part_pids, parts  # noqa: F401 - re-exported
from mlops.platform.status import status  # noqa: F401 - re-exported

RECONCILE_DEPLOYMENT = "delivery-reconciliation/reconcile"  # prefect.yaml
SERVER_START_TIMEOUT = 180.0  # seconds; each server alone answers in ≈ 20-30 s
WORKER_START_TIMEOUT = 60.0


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
        print(f"  work pool {deploy.WORK_POOL!r}: {deploy.ensure_work_pool(s, client_env)}", flush=True)
        print(f"  {worker.name}: {stack_parts.start(worker)}, log {worker.log_file}", flush=True)
        step = time.monotonic()
        print(f"  deployments: {deploy.deploy_all(s, client_env)} ({time.monotonic() - step:.1f} s)", flush=True)
        print(f"  {receiver.name}: {stack_parts.start(receiver)}, log {receiver.log_file}", flush=True)
        stack_parts.await_healthy(worker, WORKER_START_TIMEOUT)
        stack_parts.await_healthy(warm, WORKER_START_TIMEOUT)
        stack_parts.await_healthy(mlflow, SERVER_START_TIMEOUT)
        stack_parts.await_healthy(receiver, WORKER_START_TIMEOUT)
        _require_authentication(s)
        with _as_client(s):
            hook = _step("register the MLflow webhook", s.mlflow_uri, lambda: _ensure_webhook(s))
            print(f"  MLflow webhook: {hook} → {s.webhook_url}", flush=True)
            _write_env_file(s)
            services.restore_model_services(s)
            api = s.prefect_api_url
            zombie = _step("create the zombie-run automation", api, lambda: zombies.ensure_zombie_automation(s))
            print(f"  zombie-run automation: {zombie}", flush=True)
            notify = lambda: notifications.ensure_notifications(s, load_config().notifications)  # noqa: E731
            print(f"  notifications: {_step('apply the notification automations', api, notify)}", flush=True)
            reconcile = _step(f"start {RECONCILE_DEPLOYMENT}", api, lambda: _reconcile_now(s))
            print(f"  delivery reconciliation: {reconcile}", flush=True)
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
        # The model services before the warm starter they were forked from: its process group holds them too, and
        # each should stop by its own record (TERM through its client: uvicorn's shutdown writes the capture buffer).
        services.stop_model_services(s)
        stack_parts.stop(by_key["warm"])  # its flow runs died with the worker's clients
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
            f"{s.state_dir} holds a stack of the {recorded!r} profile, and {env_name('profile')}={s.profile!r} asks for the other: "
            f"unset {env_name('profile')} to use it, or give the {s.profile} stack its own MLOPS_STATE_DIR"
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


def _step(what: str, where: str, action: Callable[[], str]) -> str:
    """One of `up`'s steps on an API; any error of Prefect's or MLflow's clients (they raise several types) stops `up`,
    naming the step and the server."""
    try:
        return action()
    except StackError:
        raise
    except Exception as exc:
        raise StackError(f"cannot {what} at {where}: {exc}") from None


def _reconcile_now(s: StackSettings) -> str:
    """Start one delivery reconciliation: versions registered while the stack was down get their CD run."""
    with automations.stack_client(s) as client:  # the API: the CLI costs seconds to start
        run = client.create_flow_run_from_deployment(client.read_deployment_by_name(RECONCILE_DEPLOYMENT).id)
    return f"started (flow run {run.id})"


def _ensure_webhook(s: StackSettings) -> str:
    """Point MLflow's `model_version.created` webhook at the receiver (shared HMAC secret, 0600 file)."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(s.mlflow_uri, registry_uri=s.mlflow_uri)
    return f"registered (id {ensure_webhook(client, s.webhook_url, private_secret(s.webhook_secret_file))})"


def _shown(path: Path) -> str:
    """`path` relative to the working directory when it is below it, for copy-pasteable hints."""
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)
