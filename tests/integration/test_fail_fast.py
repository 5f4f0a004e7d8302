"""Every entry point checks the servers it needs before work starts and says what to do when one is down."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from mlops.config import DEFAULT_CONFIG, PROJECT_ROOT
from mlops.processes import free_port
from tests.conftest import DIABETES_CONFIG, write_config

pytestmark = pytest.mark.integration


def _down_env(tmp_path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "MLFLOW_", "MLOPS_"))}
    return env | {
        "MLFLOW_TRACKING_URI": f"http://127.0.0.1:{free_port()}",  # nothing listens there
        "MLOPS_STATE_DIR": str(tmp_path / "state"),
        "PREFECT_HOME": str(tmp_path / "prefect"),
        "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "180",
    }  # a busy 2-core machine


def test_the_readme_s_in_process_ct_with_the_stack_down_fails_at_once_naming_url_and_fix(tmp_path):
    # README "Your own model": CT in-process on the diabetes example. With no MLflow server it used to
    # retry for 7.5 minutes (urllib3 backoff inside task retries) before `Connection refused`.
    env = _down_env(tmp_path) | {"MLOPS_CONFIG": str(DIABETES_CONFIG)}
    code = "from flows.continuous_training import continuous_training; print(continuous_training())"
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=PROJECT_ROOT, env=env, capture_output=True, text=True, timeout=300
    )
    output = done.stdout + done.stderr
    assert done.returncode != 0
    assert env["MLFLOW_TRACKING_URI"] in output and "make up" in output and "MLFLOW_TRACKING_URI" in output
    assert "Retry 1/" not in output  # the check runs before any retried task


def test_mlops_serve_with_the_registry_down_exits_with_the_fix(tmp_path):
    env = _down_env(tmp_path)
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "mlops.platform.cli",
            "serve",
            "--model-uri",
            "models:/flights-delay@champion",
            "--port",
            str(free_port()),
        ],
        cwd=PROJECT_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode != 0
    assert "does not answer" in done.stderr and "make up" in done.stderr


def test_mlops_approve_with_the_stack_down_exits_with_the_fix(tmp_path):
    config = write_config(DEFAULT_CONFIG, tmp_path, {"stack.prefect_port": free_port()})  # nothing listens there
    env = _down_env(tmp_path) | {"MLOPS_CONFIG": str(config)}
    done = subprocess.run(
        [sys.executable, "-m", "mlops.platform.cli", "approve", "flights-delay", "3"],
        cwd=PROJECT_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2, done.stderr
    assert "Prefect server" in done.stderr and "does not answer" in done.stderr and "make up" in done.stderr
