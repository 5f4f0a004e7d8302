"""The scale profile's stack for this folder's tests: Prefect and MLflow on PostgreSQL, CT's search on Dask.

One stack per module (not per session), so that a single-process run that also starts the e2e
stack has the two apart: this one's config is in os.environ only while its module runs. Its state
dir is outside pytest's temporary root, which only root may search: the PostgreSQL server runs as
the `postgres` user when the tests run as root (mlops/platform/postgres.py).
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from mlops.config import PROJECT_ROOT
from mlops.platform import processes
from mlops.platform.settings import CONFIG_ENV, StackSettings
from mlops.platform.stack import down, part_pids, up
from tests.conftest import write_config
from tests.e2e.conftest import _free_ports, mlflow_client, prefect_client, wait_for_flow_run  # noqa: F401 - fixtures

__all__ = ["mlflow_client", "prefect_client", "wait_for_flow_run"]


@pytest.fixture(scope="module")
def stack() -> Iterator[StackSettings]:
    root = Path(tempfile.mkdtemp(prefix="mlops-scale-"))
    root.chmod(0o711)  # searchable (not readable) by the server's user
    prefect_port, mlflow_port, worker_port, receiver_port, postgres_port = _free_ports(5)
    config = write_config(PROJECT_ROOT / "mlops.yaml", root, {
        "window": {"as_of": "2013-02-01", "months": 1},
        "load_test": {"users": 4, "spawn_rate": 4, "seconds": 3},
        "delivery.watch_seconds": 2,
        "slo": {"p95_ms": 2000, "p99_ms": 5000, "max_error_rate": 0.01, "min_rps": 5},
        "serving.staging_port": processes.free_port(),
        "serving.production_port": processes.free_port(),
    })
    settings = StackSettings(state_dir=root / "state", prefect_port=prefect_port, mlflow_port=mlflow_port,
                             worker_port=worker_port, receiver_port=receiver_port, postgres_port=postgres_port,
                             profile="scale")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv(CONFIG_ENV, str(config))
        try:
            if up(settings) != 0:
                pytest.fail("mlops up failed for the scale stack; its output is above (PostgreSQL missing or not installable?)")
            for name, value in settings.credential_env().items():
                patch.setenv(name, value)
            yield settings
        finally:
            started = set().union(*part_pids(settings).values())
            down(settings)
            left = processes.alive_pids(started)
            shutil.rmtree(settings.state_dir / "postgres", ignore_errors=True)  # its 40 MB; the logs stay for a failure
            assert not left, f"processes still alive after down(): {sorted(left)}"
