import asyncio
import os
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId
from prefect.testing.utilities import prefect_test_harness

from mlops import processes
from mlops.config import PROJECT_ROOT
from mlops.platform import warmstart


@pytest.fixture(scope="session")
def prefect_backend():
    """Flows called in-process record their runs and artifacts in a throwaway Prefect database. Their logs go to
    pytest's output, not to that server: no test here reads them back (the e2e stack ships them and reads them),
    and each log line sent is an API call and a database write on the 2 cores the suite shares."""
    from prefect.settings import PREFECT_LOGGING_TO_API_ENABLED, temporary_settings

    with prefect_test_harness(server_startup_timeout=60), temporary_settings({PREFECT_LOGGING_TO_API_ENABLED: False}):
        yield


@pytest.fixture(scope="session", autouse=True)
def warm_starter() -> Iterator[Path]:
    """The model services CD's Terraform starts begin as forks of a warm starter, as on the stack
    (mlops/platform/warmstart.py); one per test process, stopped by its process group afterwards."""
    directory = Path(tempfile.mkdtemp(prefix="mlops-warm-"))  # short: a Unix socket's path has ~100 bytes
    socket_path = directory / "warm.sock"
    command = [sys.executable, "-m", "mlops.platform.warmstart", "serve", str(socket_path), str(PROJECT_ROOT)]
    healthy = lambda: warmstart.ping(socket_path)  # noqa: E731
    with (
        processes.server(command, env=os.environ, log=directory / "warm.log", healthy=healthy, timeout_s=180),
        pytest.MonkeyPatch.context() as patch,
    ):
        patch.setenv(warmstart.SOCKET_ENV, str(socket_path))
        yield socket_path


def read_artifacts(flow_run_id) -> dict[str, str]:
    """The artifacts a flow run published, by key."""

    async def read():
        async with get_client() as client:
            found = await client.read_artifacts(
                artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[flow_run_id]))
            )
            return {a.key: str(a.data) for a in found if a.key}

    return asyncio.run(read())


def read_flow_run_tags(flow_run_id) -> list[str]:
    async def read():
        async with get_client() as client:
            return (await client.read_flow_run(flow_run_id)).tags

    return asyncio.run(read())


class MlflowServer:
    """A real `mlflow server` (SQLite backend, artifacts served) that a test may stop and start again.

    Its store survives a restart, as the stack's does; the port stays the same, so clients that
    were pointed at it before the stop reach it again after the start.
    """

    def __init__(self, root: Path):
        self.root = root
        self.port = processes.free_port()
        self.uri = f"http://127.0.0.1:{self.port}"
        self.log = root / "mlflow-server.log"
        self.pid_file = self.log.with_suffix(".pid")

    def start(self, timeout: float = 120) -> None:
        command = [
            str(Path(sys.executable).parent / "mlflow"), "server", "--host", "127.0.0.1", "--port", str(self.port),
            "--backend-store-uri", f"sqlite:///{self.root / 'mlflow.db'}",
            "--artifacts-destination", str(self.root / "artifacts"), "--serve-artifacts", "--workers", "1",
        ]  # fmt: skip
        env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")} | {
            "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"
        }
        processes.start_detached(command, pid_file=self.pid_file, log_file=self.log, env=env, cwd=self.root)
        healthy = lambda: processes.http_ok(f"{self.uri}/health")  # noqa: E731
        processes.await_healthy(self.pid_file, healthy, timeout=timeout, what=f"mlflow server {self.uri}", log=self.log)

    def stop(self) -> None:
        assert processes.stop(self.pid_file), f"mlflow server (pid file {self.pid_file}) did not stop"


@pytest.fixture
def mlflow_server(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[MlflowServer]:
    """As `isolated`, but the tracking URI is a real MLflow server, stopped by pid at the end."""
    import mlflow

    server = MlflowServer(tmp_path)
    server.start()
    monkeypatch.setenv("MLFLOW_TRACKING_URI", server.uri)
    monkeypatch.setenv("MLOPS_STATE_DIR", str(tmp_path / "state"))
    monkeypatch.delenv("MLOPS_CONFIG", raising=False)
    mlflow.set_tracking_uri(server.uri)
    try:
        yield server
    finally:
        mlflow.set_tracking_uri(None)
        processes.stop(server.pid_file)
