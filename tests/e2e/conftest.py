"""One real local stack per test session, on free ports in a temporary state dir.

It runs next to a stack a developer may have up on the default ports, and is stopped by pid at
the end of the session whatever happened. e2e tests take the `stack` fixture (settings: URLs,
ports, paths), `prefect_client` (a sync Prefect client; Prefect calls inside the test, such as
`run_deployment`, also go to the test stack), `wait_for_flow_run`, and `champion` when they need a
promoted model serving production: every test makes what it needs, so each passes on its own.
The stack requires credentials: for the session, os.environ holds its clients' (as a shell that
sourced `<state>/env` would), so an MLflow client made anywhere in a test is authenticated.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import TYPE_CHECKING, Any
from uuid import UUID

import httpx
import pytest

from mlops.config import PROJECT_ROOT, load_config
from mlops.platform import processes
from mlops.platform.settings import CONFIG_ENV, StackSettings
from mlops.platform.stack import down, part_pids, up
from tests.conftest import write_config

if TYPE_CHECKING:
    from prefect.client.orchestration import SyncPrefectClient
    from prefect.client.schemas.objects import State

CT_DEPLOYMENT = "continuous-training/retrain"
CD_DEPLOYMENT = "continuous-delivery/deploy-model"


def _free_ports(count: int) -> list[int]:
    ports: set[int] = set()
    while len(ports) < count:
        ports.add(processes.free_port())
    return sorted(ports)


class WebhookReceiver:
    """A local HTTP receiver (a thread of the test process on 127.0.0.1) that keeps every POST: headers and body.

    Stands in for Slack and for any webhook consumer this machine cannot reach; `stop()` shuts it down.
    """

    def __init__(self) -> None:
        self.posts: list[tuple[dict[str, str], bytes]] = []
        self._lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                with receiver._lock:
                    receiver.posts.append((dict(self.headers), body))
                self.send_response(200)
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._server.server_port}/hook"
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def texts(self, containing: str = "") -> list[str]:
        """The `text` of every JSON post received so far that contains `containing`."""
        with self._lock:
            bodies = [body for _, body in self.posts]
        found = [json.loads(body).get("text", "") for body in bodies if body.startswith(b"{")]
        return [text for text in found if containing in text]

    def wait_for(self, containing: str, timeout: float = 60.0) -> list[str]:
        """The texts containing `containing`, polled until there is one; fail the test at the deadline."""
        deadline = time.monotonic() + timeout
        while not (found := self.texts(containing)):
            if time.monotonic() > deadline:
                pytest.fail(f"no notification containing {containing!r} within {timeout:.0f} s; got {self.texts()}")
            time.sleep(0.2)
        return found

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()


@pytest.fixture(scope="session")
def notification_receiver() -> Iterator[WebhookReceiver]:
    """Where the stack's notification automations post (its URL is the e2e config's `notifications.webhook_url`)."""
    receiver = WebhookReceiver()
    yield receiver
    receiver.stop()


def stack_test_config(directory: Path, changes: dict[str, Any] | None = None) -> Path:
    """The default use case on one month, with a short load test, loose SLOs and free service ports, in `directory`."""
    return write_config(
        PROJECT_ROOT / "mlops.yaml",
        directory,
        {
            "window": {"as_of": "2013-02-01", "months": 1},
            "load_test": {"users": 4, "spawn_rate": 4, "seconds": 3},
            "delivery.watch_seconds": 2,
            "slo": {"p95_ms": 2000, "p99_ms": 5000, "max_error_rate": 0.01, "min_rps": 5},
            "serving.staging_port": processes.free_port(),
            "serving.production_port": processes.free_port(),
            **(changes or {}),
        },
    )


@pytest.fixture(scope="session")
def e2e_config(tmp_path_factory: pytest.TempPathFactory, notification_receiver: WebhookReceiver) -> Iterator[Path]:
    """The default use case on one month, with a short load test, loose SLOs, free service ports and
    notifications to a local receiver.

    Set as MLOPS_CONFIG before the stack starts, so the worker's flow runs read it too.
    """
    path = stack_test_config(
        tmp_path_factory.mktemp("config"), {"notifications.webhook_url": notification_receiver.url}
    )
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv(CONFIG_ENV, str(path))
        yield path


@pytest.fixture(scope="session")
def stack(tmp_path_factory: pytest.TempPathFactory, e2e_config: Path) -> Iterator[StackSettings]:
    """A running local stack (Prefect server, MLflow server, worker, receiver, deployments) for the session."""
    prefect_port, mlflow_port, worker_port, receiver_port = _free_ports(4)
    settings = StackSettings(
        state_dir=tmp_path_factory.mktemp("stack"),
        prefect_port=prefect_port,
        mlflow_port=mlflow_port,
        worker_port=worker_port,
        receiver_port=receiver_port,
    )
    with running_stack(settings, "the e2e stack"):
        yield settings


@contextmanager
def running_stack(settings: StackSettings, what: str) -> Iterator[None]:
    """`up`, os.environ holding the stack's client credentials; then `down`, and no process of the stack left."""
    try:
        if up(settings) != 0:
            pytest.fail(f"mlops up failed for {what}; its output is above")
        with pytest.MonkeyPatch.context() as patch:
            for name, value in settings.credential_env().items():
                patch.setenv(name, value)
            yield
    finally:
        started = set().union(*part_pids(settings).values())
        down(settings)
        left = processes.alive_pids(started)
        assert not left, f"processes still alive after down(): {sorted(left)}"


@pytest.fixture
def prefect_client(stack: StackSettings) -> Iterator[SyncPrefectClient]:
    """A Prefect client on the test stack; the whole test talks to that stack, not the user's."""
    from prefect.client.orchestration import get_client

    with stack.prefect_settings(), get_client(sync_client=True) as client:
        yield client


@pytest.fixture
def wait_for_flow_run(prefect_client: SyncPrefectClient) -> Callable[..., State]:
    """`wait_for_flow_run(flow_run_id, timeout=120)`: poll until a final state; fail the test at the deadline."""

    def wait(flow_run_id: UUID, timeout: float = 120.0) -> State:
        deadline = time.monotonic() + timeout
        while True:
            state = prefect_client.read_flow_run(flow_run_id).state
            if state is not None and state.is_final():
                return state
            if time.monotonic() > deadline:
                where = state.name if state else "without a state"
                pytest.fail(f"flow run {flow_run_id} still {where} after {timeout:.0f} s")
            time.sleep(0.5)

    return wait


@pytest.fixture
def mlflow_client(stack: StackSettings) -> Iterator[Any]:
    """An MLflow client on the test stack (its credentials are in os.environ, see `stack`); MLflow's process-wide
    tracking URI points there meanwhile."""
    import mlflow
    from mlflow.tracking import MlflowClient

    mlflow.set_tracking_uri(stack.mlflow_uri)
    yield MlflowClient(stack.mlflow_uri)
    mlflow.set_tracking_uri(None)  # process-wide in MLflow (it also sets MLFLOW_TRACKING_URI): undo it


def flow_runs(
    prefect_client: SyncPrefectClient, deployment: str, where: Callable[[Any], bool] | None = None, **parameters: Any
) -> list[Any]:
    """The runs of `deployment` whose parameters equal `parameters` (compared as text) and match `where`."""
    from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterId

    deployment_id = prefect_client.read_deployment_by_name(deployment).id
    runs = prefect_client.read_flow_runs(
        deployment_filter=DeploymentFilter(id=DeploymentFilterId(any_=[deployment_id]))
    )
    return [
        r
        for r in runs
        if all(str(r.parameters.get(k)) == str(v) for k, v in parameters.items()) and (where is None or where(r))
    ]


def one_flow_run(
    prefect_client: SyncPrefectClient,
    deployment: str,
    what: str,
    timeout: float = 120.0,
    where: Callable[[Any], bool] | None = None,
    **parameters: Any,
) -> Any:
    """The single matching run of `deployment`, polled for: an automation creates it asynchronously."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = flow_runs(prefect_client, deployment, where, **parameters)
        if found:
            assert len(found) == 1, f"{len(found)} {deployment} runs for {what}: expected exactly one"
            return found[0]
        time.sleep(0.5)
    pytest.fail(f"no {deployment} run for {what} within {timeout:.0f} s")


def flow_run_artifacts(prefect_client: SyncPrefectClient, flow_run_id: Any) -> dict[str, str]:
    """The artifacts a flow run published, by key (a table's rows as JSON text)."""
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    found = prefect_client.read_artifacts(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id])))
    return {a.key: a.data if isinstance(a.data, str) else json.dumps(a.data) for a in found if a.key}


def served_version(port: int) -> str | None:
    """The model version the service on `port` answers with; None when nothing answers there."""
    try:
        return str(httpx.get(f"http://127.0.0.1:{port}/version", timeout=5).json()["model_version"])
    except (httpx.HTTPError, ValueError, KeyError):
        return None


def _champion_version(client: Any, name: str) -> str | None:
    """The `champion` version; None before the first promotion (the registry's one lookup: other errors raise)."""
    from mlops.adapters import registry

    found = registry.champion(client, name)
    return found.version if found else None


@pytest.fixture
def champion(stack: StackSettings, prefect_client: SyncPrefectClient, wait_for_flow_run: Callable[..., State]) -> str:
    """The `champion` version, serving production: made through the deployments when there is none.

    Looked up for every test, since tests promote new versions: two requests when a champion
    serves (the usual case after the first delivery of the session). With no champion, CT runs
    from its deployment and the CD its registration starts promotes the version; with a champion
    whose service is gone (`down` destroys the model services), CD delivers it again.
    """
    from mlflow.tracking import MlflowClient
    from prefect.deployments import run_deployment

    config = load_config()
    name, port = config.tracking.model_name, config.serving.production_port
    client = MlflowClient(stack.mlflow_uri, registry_uri=stack.mlflow_uri)
    version = _champion_version(client, name)
    if version is not None and served_version(port) == version:
        return version
    if version is None:
        ct = run_deployment(CT_DEPLOYMENT, parameters={"reason": "e2e"}, timeout=0)
        ct_state = wait_for_flow_run(ct.id, timeout=300)
        assert ct_state.is_completed(), f"CT for a first champion: {ct_state.name}: {ct_state.message}"
        [registered] = client.search_model_versions(f"name = '{name}' and tags.prefect_flow_run_id = '{ct.id}'")
        cd = one_flow_run(prefect_client, CD_DEPLOYMENT, f"version {registered.version}", version=registered.version)
    else:
        cd = run_deployment(CD_DEPLOYMENT, parameters={"version": version}, timeout=0)
    state = wait_for_flow_run(cd.id, timeout=300)
    assert state.name == "Completed", f"CD for the champion: {state.name}: {state.message}"
    version = _champion_version(client, name)
    assert version is not None and served_version(port) == version, f"champion v{version} does not serve production"
    return version
