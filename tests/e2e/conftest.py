"""One real local stack per test session, on free ports in a temporary state dir, and the loop run on it once.

The stack runs next to a stack a developer may have up on the default ports, and is stopped by pid
at the end of the session whatever happened. The expensive things are made once per session and
shared as work, not state: `delivered` is the whole loop run once (a commit → CI → `mlops.ci.passed`
→ CT → the registration's automation → CD → production), and the facts each test reads from it are
recorded when it ends; `champion` is whatever version serves production now, delivered again when
its service is gone. Each test arranges the rest cheaply (a copy of a registered model, a CD run of
an existing version) and leaves no flow run behind: after every test the stack must be idle (no run
pending, running, paused or cancelling), or the test that left one fails saying which.

Every wait goes through `mlops.waiting.wait_for` or Prefect's own `wait_for_flow_run`, and says on
timeout what it waited for, the runs it saw and the worker's last log lines.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import TYPE_CHECKING, Any
from uuid import UUID

import httpx
import pytest

from mlops import processes, waiting
from mlops.config import PROJECT_ROOT, load_config
from mlops.config.stack import StackSettings
from mlops.platform.automations import prefect_settings
from mlops.platform.stack import down, part_pids, parts, up
from tests.conftest import quick_delivery_config

if TYPE_CHECKING:
    from prefect.client.orchestration import SyncPrefectClient
    from prefect.client.schemas.objects import FlowRun

CI_DEPLOYMENT = "continuous-integration/on-commit"
CT_DEPLOYMENT = "continuous-training/retrain"
CD_DEPLOYMENT = "continuous-delivery/deploy-model"
DRIFT_DEPLOYMENT = "drift-monitoring/scheduled"
# A flow run counts as busy in these states (Scheduled and Late only once due: schedules keep future runs).
BUSY = ("PENDING", "RUNNING", "CANCELLING", "PAUSED")
WEBHOOK_RETRIES = "1"  # MLflow gives up on a refused webhook in about a second (its default, 3, takes ~15 s)
RUN_TIMEOUT_S = 420.0  # one flow run on the stack, CT or CD, under the other pytest process's load


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
        """The texts containing `containing`, once there is one."""
        return waiting.wait_for(
            lambda: self.texts(containing),
            timeout=timeout,
            what=f"a notification containing {containing!r}",
            interval=0.2,
            seen=lambda: f"{len(self.posts)} posts: {self.texts()}",
        )

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
    """The default use case on one month, quick to deliver, with free service ports, in `directory`."""
    return quick_delivery_config(directory, changes)


@pytest.fixture(scope="session")
def e2e_config(tmp_path_factory: pytest.TempPathFactory, notification_receiver: WebhookReceiver) -> Iterator[Path]:
    """The quick use case with notifications to a local receiver.

    Set as MLOPS_CONFIG before the stack starts, so the worker's flow runs read it too.
    """
    # A looser calibration bound than the default's 0.05: the one-month champion (≈ 0.07 on its holdout) then gets
    # the label-free estimate, which test_feedback_automation shows beside the realized metric.
    changes = {"notifications.webhook_url": notification_receiver.url, "feedback.max_calibration_error": 0.2}
    path = stack_test_config(tmp_path_factory.mktemp("config"), changes)
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MLOPS_CONFIG", str(path))
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
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MLFLOW_WEBHOOK_REQUEST_MAX_RETRIES", WEBHOOK_RETRIES)  # the MLflow server inherits it
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


@contextmanager
def client_of(stack: StackSettings) -> Iterator[SyncPrefectClient]:
    """A sync Prefect client on `stack`; Prefect calls made meanwhile (run_deployment) go there too."""
    from prefect.client.orchestration import get_client

    with prefect_settings(stack), get_client(sync_client=True) as client:
        yield client


@pytest.fixture
def prefect_client(stack: StackSettings) -> Iterator[SyncPrefectClient]:
    """A Prefect client on the test stack; the whole test talks to that stack, not the user's."""
    with client_of(stack) as client:
        yield client


@pytest.fixture(autouse=True)
def idle_stack_after(request: pytest.FixtureRequest) -> Iterator[None]:
    """After each e2e test, no flow run of it is left pending, running, paused or cancelling."""
    yield
    if "stack" not in request.fixturenames:
        return
    stack = request.getfixturevalue("stack")
    with client_of(stack) as client:
        settle(stack, client, f"after {request.node.name}")


def busy_runs(client: SyncPrefectClient) -> list[FlowRun]:
    """The flow runs the stack is busy with: pending, running, paused, cancelling, or scheduled and due."""
    from datetime import UTC, datetime

    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterState, FlowRunFilterStateType

    waiting_types = FlowRunFilterStateType(any_=["SCHEDULED", *BUSY])
    found = client.read_flow_runs(flow_run_filter=FlowRunFilter(state=FlowRunFilterState(type=waiting_types)))
    now = datetime.now(UTC)
    return [
        r
        for r in found
        if r.state.type.value in BUSY or (r.next_scheduled_start_time or r.expected_start_time or now) <= now
    ]


def settle(stack: StackSettings, client: SyncPrefectClient, when: str, timeout: float = RUN_TIMEOUT_S) -> None:
    """Wait until the stack runs no flow run (a background CD, a scheduled reconciliation finishing)."""
    waiting.wait_for(
        lambda: not busy_runs(client),
        timeout=timeout,
        what=f"the stack idle {when}",
        interval=1.0,
        seen=lambda: explain(stack, client),
    )


def explain(stack: StackSettings, client: SyncPrefectClient, flow_run_id: UUID | str | None = None) -> str:
    """What the stack is doing: a run's state, the runs it is busy with, the worker's last log lines."""
    lines = []
    if flow_run_id is not None:
        run = client.read_flow_run(flow_run_id)
        lines.append(f"run {run.name} ({flow_run_id}): {run.state.name if run.state else 'no state'}")
        if run.state and run.state.message:
            lines.append(f"  message: {run.state.message}")
    busy = [f"{r.name} {r.state.name} since {r.state.timestamp:%H:%M:%S}" for r in busy_runs(client)]
    lines.append(f"busy runs: {busy or 'none'}")
    worker_log = parts(stack)["worker"].log_file
    lines.append(f"last lines of {worker_log}:\n{processes.tail(worker_log, 15)}")
    return "\n".join(lines)


def finished(stack: StackSettings, flow_run_id: UUID | str, what: str, timeout: float = RUN_TIMEOUT_S) -> FlowRun:
    """The flow run once it is final, awaited through Prefect's own wait_for_flow_run (its events)."""
    from prefect.exceptions import FlowRunWaitTimeout
    from prefect.flow_runs import wait_for_flow_run

    with prefect_settings(stack):
        try:
            return asyncio.run(wait_for_flow_run(UUID(str(flow_run_id)), timeout=int(timeout)))
        except FlowRunWaitTimeout:
            with client_of(stack) as client:
                pytest.fail(f"{what}: not final within {timeout:.0f} s\n{explain(stack, client, flow_run_id)}")


@pytest.fixture
def wait_for_flow_run(stack: StackSettings) -> Callable[..., Any]:
    """`wait_for_flow_run(flow_run_id, timeout=RUN_TIMEOUT_S)`: the run's final state; fails the test explaining."""

    def wait(flow_run_id: UUID, timeout: float = RUN_TIMEOUT_S) -> Any:
        return finished(stack, flow_run_id, f"flow run {flow_run_id}", timeout).state

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
    """The single matching run of `deployment`, once an automation has created it."""
    found = waiting.wait_for(
        lambda: flow_runs(prefect_client, deployment, where, **parameters),
        timeout=timeout,
        what=f"a {deployment} run for {what}",
        seen=lambda: f"runs of {deployment}: {[(r.name, r.state.name) for r in flow_runs(prefect_client, deployment)]}",
    )
    assert len(found) == 1, f"{len(found)} {deployment} runs for {what}: expected exactly one"
    return found[0]


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


def git(repo: Path, *args: str, env: dict[str, str] | None = None) -> str:
    command = ["git", "-c", "user.name=e2e", "-c", "user.email=e2e@example.com", *args]
    return subprocess.run(
        command, cwd=repo, env=env, check=True, capture_output=True, text=True, timeout=60
    ).stdout.strip()


def commit(
    repo: Path, relative: str, edit: Callable[[str], str], message: str, env: dict[str, str] | None = None
) -> str:
    """Edit one file of `repo`, commit it, and return the commit's sha."""
    target = repo / relative
    target.write_text(edit(target.read_text()))
    git(repo, "commit", "--quiet", "--all", "--message", message, env=env)
    return git(repo, "rev-parse", "HEAD")


def clone_of_this_repo(directory: Path) -> Path:
    """A clone of this repository's committed state: commits are made there, never in the working tree."""
    path = directory / "clone"
    git(directory, "clone", "--quiet", str(PROJECT_ROOT), str(path))
    return path


OTHER_USE_CASE = "returns"  # a folder of usecases/ with the team's own code, delivered beside the session's

# The passing commit's CI checks: the Terraform checks, a few seconds. The unit, integration, data and model
# suites are the rest of this session already, and the model check runs whole in-process on a model below
# its floors (tests/integration/test_ci_failures.py: every step runs, the floor fails); the failing data
# check runs from the git hook (test_ci_automation.py).
QUICK_CHECKS = ["infra"]


@dataclass(frozen=True)
class Delivered:
    """The loop, run once on the session's stack, as its runs and the registry recorded it when it ended."""

    sha: str
    ci: Any  # FlowRun
    ct: Any
    cd: Any
    version: str  # what CT registered
    version_tags: dict[str, str]
    champion: str | None  # the alias right after CD ended
    served: str | None  # what production answered with then
    beside: Any  # the id of the CT run of OTHER_USE_CASE started with the commit's


@pytest.fixture(scope="session")
def delivered(stack: StackSettings, tmp_path_factory: pytest.TempPathFactory) -> Delivered:
    """A harmless commit → CI → `mlops.ci.passed` → CT with its sha → MLflow webhook → CD → production, once."""
    from mlflow.tracking import MlflowClient
    from prefect.deployments import run_deployment

    clone = clone_of_this_repo(tmp_path_factory.mktemp("delivered"))
    sha = commit(clone, "flows/continuous_training.py", lambda text: text + "\n# e2e: a harmless change\n", "Harmless")
    config = load_config()
    name = config.tracking.model_name
    registry = MlflowClient(stack.mlflow_uri, registry_uri=stack.mlflow_uri)
    with client_of(stack) as client:
        params = {"sha": sha, "repo_path": str(clone), "checks": QUICK_CHECKS}
        ci = finished(stack, run_deployment(CI_DEPLOYMENT, parameters=params, timeout=0).id, f"CI of {sha}")
        assert ci.state.is_completed(), f"CI of the session's commit: {ci.state.name}: {ci.state.message}"
        # A second use case trains at the same time on the same stack (other_delivered follows it to production).
        beside = run_deployment(CT_DEPLOYMENT, parameters={"use_case": OTHER_USE_CASE}, timeout=0)
        ct = one_flow_run(client, CT_DEPLOYMENT, f"commit {sha}", where=lambda r: r.parameters.get("commit") == sha)
        ct = finished(stack, ct.id, f"CT of {sha}")
        assert ct.state.is_completed(), f"CT of the session's commit: {ct.state.name}: {ct.state.message}"
        [version] = registry.search_model_versions(f"name = '{name}' and tags.prefect_flow_run_id = '{ct.id}'")
        cd = one_flow_run(client, CD_DEPLOYMENT, f"version {version.version}", version=version.version, model_name=name)
        cd = finished(stack, cd.id, f"CD of v{version.version}")
        assert cd.state.name == "Completed", f"CD of the session's version: {cd.state.name}: {cd.state.message}"
    return Delivered(
        beside=beside.id,
        sha=sha,
        ci=ci,
        ct=ct,
        cd=cd,
        version=str(version.version),
        version_tags=dict(registry.get_model_version(name, version.version).tags),
        champion=_champion_version(registry, name),
        served=served_version(config.serving.production_port),
    )


@pytest.fixture
def champion(stack: StackSettings, delivered: Delivered) -> str:
    """The `champion` version, serving production: the session's delivered version, or a later one a test promoted.

    When its service is gone (a test stopped the stack's model services), CD delivers it again.
    """
    from mlflow.tracking import MlflowClient
    from prefect.deployments import run_deployment

    config = load_config()
    name, port = config.tracking.model_name, config.serving.production_port
    version = _champion_version(MlflowClient(stack.mlflow_uri, registry_uri=stack.mlflow_uri), name)
    assert version is not None, "no champion after the session's delivery"
    if served_version(port) != version:
        with client_of(stack):
            run = run_deployment(CD_DEPLOYMENT, parameters={"version": version, "force": True}, timeout=0)
        state = finished(stack, run.id, f"CD of champion v{version} again").state
        assert state.name == "Completed", f"CD for the champion: {state.name}: {state.message}"
    assert served_version(port) == version, f"champion v{version} does not serve production"
    return version


@dataclass(frozen=True)
class OtherDelivered:
    """The second use case, trained beside the session's and delivered to its own environments on the same stack."""

    ct: Any  # its CT FlowRun, started with the session's commit's
    cd: Any  # the CD FlowRun its registration started
    version: str  # what CT registered
    production: int  # the port its production serves on (recorded by the stack)


@pytest.fixture(scope="session")
def other_delivered(stack: StackSettings, delivered: Delivered) -> OtherDelivered:
    """`returns` (the team's own code, LightGBM by import path): its CT, started beside the session's, and the CD its
    registration started through the automation into its own staging and production."""
    from mlflow.tracking import MlflowClient

    from mlops.adapters import environments

    registry = MlflowClient(stack.mlflow_uri, registry_uri=stack.mlflow_uri)
    name = load_config(use_case=OTHER_USE_CASE).tracking.model_name
    with client_of(stack) as client:
        ct = finished(stack, delivered.beside, f"CT of {OTHER_USE_CASE}")
        assert ct.state.is_completed(), f"CT of {OTHER_USE_CASE}: {ct.state.message}"
        [version] = registry.search_model_versions(f"name = '{name}' and tags.prefect_flow_run_id = '{ct.id}'")
        run = one_flow_run(client, CD_DEPLOYMENT, f"{name} v{version.version}", model_name=name)
        cd = finished(stack, run.id, f"CD of {name} v{version.version}")
        assert cd.state.name == "Completed", f"CD of {name}: {explain(stack, client, run.id)}"
    production = environments.recorded_ports(stack.state_dir)[f"{OTHER_USE_CASE}/production"]
    return OtherDelivered(ct=ct, cd=cd, version=str(version.version), production=production)
