"""`python -m mlops.processes`: the command Terraform's provisioners start and stop a model service with."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from mlops import processes, waiting

pytestmark = pytest.mark.unit


def owner(*args: str | Path) -> subprocess.CompletedProcess[str]:
    """Run the command as Terraform does: a child process, its own exit code and output."""
    command = [sys.executable, "-m", "mlops.processes", *map(str, args)]
    return subprocess.run(command, capture_output=True, text=True, timeout=60)


@pytest.fixture
def pid_file(tmp_path: Path) -> Iterator[Path]:
    """Where a test's service records its pid; whatever it names is stopped afterwards, even when the test fails."""
    path = tmp_path / "run" / "model-service-staging.pid"
    yield path
    processes.stop(path, timeout=5)


def test_start_detaches_the_command_and_stop_ends_it_with_its_children(tmp_path: Path, pid_file: Path) -> None:
    log_file = pid_file.with_suffix(".log")
    # The shell forks sleep: stop must reach the child too.
    command = ["sh", "-c", "sleep 60 & wait", "stand-in", "--model-uri", "models:/m/1"]

    started = owner("start", "--pid-file", pid_file, "--log-file", log_file, "--cwd", tmp_path, "--", *command)

    assert started.returncode == 0 and started.stdout.startswith("started pid "), started.stderr
    record = processes.running(pid_file)
    assert record is not None and record.command == command
    assert json.loads(pid_file.read_text()) == record.__dict__  # the JSON record: pid, start time, command
    assert os.getsid(record.pid) == record.pid  # its own session: it outlives Terraform, its group can be signalled
    assert f"starting: {' '.join(command)}" in log_file.read_text()
    family = waiting.wait_for(
        lambda: len(pids := processes.tree_pids(pid_file)) == 2 and pids,
        timeout=10,
        interval=0.05,
        what="sh forking sleep",
    )

    stopped = owner("stop", "--pid-file", pid_file, "--timeout", "5")

    assert (
        stopped.returncode == 0
        and stopped.stdout.strip() == f"stopped pid {record.pid} with its process group and descendants"
    )
    assert processes.alive_pids(family) == set() and not pid_file.exists()


@pytest.mark.parametrize("content", [None, "", '{"pid": 999999999, "create_time": 1.0, "command": ["gone"]}'])
def test_stop_without_a_live_process_is_a_no_op(tmp_path: Path, content: str | None) -> None:
    pid_file = tmp_path / "model-service-production.pid"
    if content is not None:
        pid_file.write_text(content)

    stopped = owner("stop", "--pid-file", pid_file)

    assert stopped.returncode == 0 and "nothing to stop" in stopped.stdout
    assert not pid_file.exists()


def test_a_command_that_cannot_start_fails_naming_it(tmp_path: Path, pid_file: Path) -> None:
    started = owner("start", "--pid-file", pid_file, "--log-file", tmp_path / "log", "--", tmp_path / "no-such-serve")

    assert started.returncode == 1 and "no-such-serve" in started.stderr and started.stderr.count("\n") == 1
    assert not pid_file.exists()
