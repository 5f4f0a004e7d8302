"""The README's `prefect deployment run` commands work exactly as written, on the real stack."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import time
from pathlib import Path

import psutil
import pytest

from mlops.adapters import sources
from mlops.config import PROJECT_ROOT, load_config

pytestmark = pytest.mark.e2e

PLACEHOLDER = "/path/to/new_flights.parquet"


def readme_commands() -> list[str]:
    """Every `prefect deployment run ...` line of the README, continuation lines joined."""
    text = (PROJECT_ROOT / "README.md").read_text().replace("\\\n", " ")
    return [line.strip() for line in text.splitlines() if line.strip().startswith("prefect deployment run ")]


def test_the_readme_shows_the_commands_this_test_runs():
    deployments = {shlex.split(c)[3] for c in readme_commands()}
    assert {
        "continuous-training/retrain",
        "continuous-delivery/deploy-model",
        "drift-monitoring/scheduled",
        "batch-scoring/score",
        "production-rollback/rollback",
    } <= deployments


def _run(command: str, env_file: Path) -> str:
    """Run a README command as the README says (in a shell that sourced the stack's env file); return its flow run id."""
    shell = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "MLFLOW_", "MLOPS_"))}
    shell["PATH"] = os.pathsep.join(
        p for p in shell.get("PATH", "").split(os.pathsep) if ".venv" not in p
    )  # not activated
    done = subprocess.run(
        ["bash", "-c", f"source {shlex.quote(str(env_file))} && {command}"],
        env=shell,
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, f"`{command}` failed:\n{done.stdout}\n{done.stderr}"
    found = re.search(r"UUID:\s*([0-9a-f-]{36})", done.stdout)
    assert found, done.stdout
    return found.group(1)


def test_each_deployment_run_command_is_accepted_as_written(stack, prefect_client, tmp_path: Path):
    new_flights = tmp_path / "new_flights.parquet"  # the README's placeholder, made real
    sources.load_window(load_config(), as_of="2013-03-01", months=1).frame.head(500).to_parquet(new_flights)
    for command in readme_commands():
        run_id = _run(command.replace(PLACEHOLDER, str(new_flights)), stack.env_file)
        run = prefect_client.read_flow_run(run_id)
        given = dict(re.findall(r"--param (\w+)=(\S+)", command.replace(PLACEHOLDER, str(new_flights))))
        literal = {k: v for k, v in given.items() if re.fullmatch(r"[\w./:-]+", v)}  # not `$(git ...)` or quoted JSON
        assert set(given) <= set(run.parameters), (command, run.parameters)
        assert {k: str(run.parameters[k]) for k in literal} == literal, (command, run.parameters)
        if "deploy-model" in command:  # its run name is set when it starts: no `cd-None-v3`
            deadline = time.monotonic() + 120
            while not (found := prefect_client.read_flow_run(run_id)).state.is_final() and not found.state.is_running():
                assert time.monotonic() < deadline, f"the CD run stayed {found.state.name}"
                time.sleep(0.5)
            while (
                not (name := prefect_client.read_flow_run(run_id).name).startswith("cd-")
                and time.monotonic() < deadline
            ):
                time.sleep(0.5)  # the engine names the run as it starts it
            assert name == f"cd-{load_config().tracking.model_name}-v3", name
        _cancel(prefect_client, run_id)  # accepted is what this test checks


def _cancel(prefect_client, run_id: str) -> None:
    """Cancel a run as the UI does and wait until it is over, so it changes nothing under the tests after this one.

    Only `Cancelling` makes the worker stop a started run's process (a run forced straight to
    `Cancelled` keeps running: a README rollback would apply production beside the next test's `up`).
    A run whose process saw `Cancelling` and exited by itself is left `Cancelling` by Prefect 3.9
    (its engine cannot finish the run, and the worker has no process left to stop): once no
    process of it is alive, the test finishes the cancellation itself.
    """
    from prefect.states import Cancelled, Cancelling

    prefect_client.set_flow_run_state(run_id, Cancelling(), force=True)
    deadline = time.monotonic() + 180
    while not (run := prefect_client.read_flow_run(run_id)).state.is_final():
        if run.state.name == "Cancelling" and not _process_alive(run.infrastructure_pid):
            prefect_client.set_flow_run_state(run_id, Cancelled(), force=True)  # nothing of it runs any more
            continue
        assert time.monotonic() < deadline, f"flow run {run_id} still {run.state.name} 180 s after it was cancelled"
        time.sleep(0.5)


def _process_alive(infrastructure_pid: str | None) -> bool:
    """Whether the process a run's `infrastructure_pid` names ("<host>:<pid>" or "<pid>") is alive; True when unknown."""
    if not infrastructure_pid:
        return False  # never started: nothing to stop (a Cancelling run is not picked up)
    try:
        return psutil.pid_exists(int(str(infrastructure_pid).rsplit(":", 1)[-1]))
    except ValueError:
        return True
