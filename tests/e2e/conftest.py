"""One real local stack per test session, on free ports in a temporary state dir.

It runs next to a stack a developer may have up on the default ports, and is stopped by pid at
the end of the session whatever happened. e2e tests take the `stack` fixture (settings: URLs,
ports, paths), `prefect_client` (a sync Prefect client; Prefect calls inside the test, such as
`run_deployment`, also go to the test stack) and `wait_for_flow_run`.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING
from uuid import UUID

import pytest

from mlops import processes
from mlops.config import PROJECT_ROOT
from mlops.stack import StackSettings, down, part_pids, up
from tests.conftest import write_config

if TYPE_CHECKING:
    from prefect.client.orchestration import SyncPrefectClient
    from prefect.client.schemas.objects import State


def _free_ports(count: int) -> list[int]:
    ports: set[int] = set()
    while len(ports) < count:
        ports.add(processes.free_port())
    return sorted(ports)


@pytest.fixture(scope="session")
def e2e_config(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The default use case on one month, with a short load test, loose SLOs and free service ports.

    Set as MLOPS_CONFIG before the stack starts, so the worker's flow runs read it too.
    """
    path = write_config(PROJECT_ROOT / "mlops.yaml", tmp_path_factory.mktemp("config"), {
        "window": {"as_of": "2013-02-01", "months": 1},
        "load_test": {"users": 4, "spawn_rate": 4, "seconds": 3},
        "slo": {"p95_ms": 2000, "p99_ms": 5000, "max_error_rate": 0.01, "min_rps": 5},
        "serving.staging_port": processes.free_port(),
        "serving.production_port": processes.free_port(),
    })
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
    try:
        if up(settings) != 0:
            pytest.fail("mlops up failed for the e2e stack; its output is above")
        yield settings
    finally:
        started = set().union(*part_pids(settings).values())
        down(settings)
        left = processes.alive_pids(started)
        assert not left, f"processes still alive after down(): {sorted(left)}"


@pytest.fixture
def prefect_client(stack: StackSettings) -> Iterator[SyncPrefectClient]:
    """A Prefect client on the test stack; the whole test talks to that stack, not the user's."""
    from prefect.client.orchestration import get_client
    from prefect.settings import PREFECT_API_URL, temporary_settings

    with temporary_settings(updates={PREFECT_API_URL: stack.prefect_api_url}):
        with get_client(sync_client=True) as client:
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
