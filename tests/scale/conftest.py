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

from mlops.config.stack import StackSettings
from tests.e2e.conftest import (
    _free_ports,
    mlflow_client,
    prefect_client,
    running_stack,
    stack_test_config,
    wait_for_flow_run,
)

__all__ = ["mlflow_client", "prefect_client", "wait_for_flow_run"]


@pytest.fixture(scope="module")
def stack() -> Iterator[StackSettings]:
    root = Path(tempfile.mkdtemp(prefix="mlops-scale-"))
    root.chmod(0o711)  # searchable (not readable) by the server's user
    prefect_port, mlflow_port, worker_port, receiver_port, postgres_port = _free_ports(5)
    config = stack_test_config(root)
    settings = StackSettings(
        state_dir=root / "state",
        prefect_port=prefect_port,
        mlflow_port=mlflow_port,
        worker_port=worker_port,
        receiver_port=receiver_port,
        postgres_port=postgres_port,
        profile="scale",
    )
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MLOPS_CONFIG", str(config))
        try:
            with running_stack(settings, "the scale stack (PostgreSQL missing or not installable?)"):
                yield settings
        finally:
            shutil.rmtree(settings.state_dir / "postgres", ignore_errors=True)  # its 40 MB; the logs stay for a failure
