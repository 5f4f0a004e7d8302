"""The warm flow-run server and its client (mlops/platform/warmstart.py), as real processes.

The client is what the worker starts for a run; here it runs a stand-in module instead of the engine, so the
test sees what the run's process got: stdio, environment, working directory, signals, exit code.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from mlops import processes, waiting
from mlops.config import PROJECT_ROOT
from mlops.platform import warmstart

pytestmark = pytest.mark.integration

TARGET = ["--module", "tests.integration.warm_target"]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A warm server on a socket in a temp dir, stopped by pid at the end."""
    root = tmp_path_factory.mktemp("warm")
    socket_path = root / "warm.sock"
    command = [sys.executable, "-m", "mlops.platform.warmstart", "serve", str(socket_path), str(PROJECT_ROOT)]
    healthy = lambda: warmstart.ping(socket_path)  # noqa: E731
    with processes.server(command, env=os.environ, log=root / "warm.log", healthy=healthy):
        assert oct(socket_path.stat().st_mode & 0o777) == "0o600"  # only this user may start runs through it
        yield socket_path


def _client(socket_path: Path | str, cwd: Path, *args: str) -> subprocess.Popen:
    env = os.environ | {
        warmstart.SOCKET_ENV: str(socket_path),
        "WARM_MARKER": "from-the-client",
        "PYTHONPATH": str(PROJECT_ROOT),
    }
    return subprocess.Popen(
        [sys.executable, "-m", "mlops.platform.warmstart", *TARGET, *args],
        cwd=cwd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _server_pid(socket_path: Path) -> int:
    return processes.running(socket_path.with_name("warm.pid")).pid


def test_a_run_is_a_child_of_the_warm_server_with_the_clients_stdio_environment_and_directory(server, tmp_path):
    client = _client(server, tmp_path, "exit", "7")
    out, err = client.communicate(timeout=60)
    assert client.returncode == 7, err  # the run's exit code is the client's
    seen = json.loads(out.splitlines()[0])  # the run wrote to the client's stdout
    assert seen["ppid"] == _server_pid(server) and seen["pid"] != client.pid
    assert (seen["cwd"], seen["marker"], seen["argv"]) == (str(tmp_path), "from-the-client", ["exit", "7"])
    assert "fresh interpreter" not in err


def _started(client: subprocess.Popen) -> dict:
    report = json.loads(client.stdout.readline())
    assert client.stdout.readline().strip() == "waiting"
    return report


def test_a_sigterm_to_the_client_reaches_the_run(server, tmp_path):
    client = _client(server, tmp_path, "wait")
    _started(client)
    client.send_signal(signal.SIGTERM)  # what the worker does to cancel a run
    assert client.wait(timeout=30) == 42  # the run's own handler answered


def test_the_run_dies_with_its_client(server, tmp_path):
    client = _client(server, tmp_path, "wait")
    run = _started(client)["pid"]
    client.kill()  # the worker's hard kill, or the worker and its children killed together
    client.wait(timeout=30)
    assert waiting.holds(lambda: not processes.alive_pids({run}), timeout=30), f"run {run} outlived its client"


def test_without_a_server_the_client_runs_the_module_in_a_fresh_interpreter(tmp_path):
    client = _client(tmp_path / "nothing.sock", tmp_path, "exit", "3")
    out, err = client.communicate(timeout=60)
    assert client.returncode == 3
    assert json.loads(out.splitlines()[0])["pid"] == client.pid  # exec'd: the client's own process ran it
    assert "does not answer" in err and "starting a fresh interpreter" in err
