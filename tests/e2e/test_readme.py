"""The README's `prefect deployment run` commands work exactly as written, on the real stack."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from mlops.adapters import sources
from mlops.config import PROJECT_ROOT, load_config
from mlops.platform.deploy import WORK_POOL

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


@pytest.fixture
def pool_paused(stack, prefect_client) -> Iterator[None]:
    """The `local` work pool paused: a run is created and waits, and no worker ever starts it."""
    from prefect.client.schemas.actions import WorkPoolUpdate

    prefect_client.update_work_pool(WORK_POOL, WorkPoolUpdate(is_paused=True))
    try:
        yield
    finally:
        prefect_client.update_work_pool(WORK_POOL, WorkPoolUpdate(is_paused=False))


def test_each_deployment_run_command_is_accepted_as_written(stack, prefect_client, pool_paused, tmp_path: Path):
    """Each command creates its run with the parameters as written; the runs are then deleted, never started
    (what they would do is the rest of the suite's business, and a started run cannot be taken back cleanly)."""
    new_flights = tmp_path / "new_flights.parquet"  # the README's placeholder, made real
    sources.load_window(load_config(), as_of="2013-03-01", months=1).frame.head(500).to_parquet(new_flights)
    created = []
    try:
        for command in readme_commands():
            run_id = _run(command.replace(PLACEHOLDER, str(new_flights)), stack.env_file)
            created.append(run_id)
            run = prefect_client.read_flow_run(run_id)
            given = dict(re.findall(r"--param (\w+)=(\S+)", command.replace(PLACEHOLDER, str(new_flights))))
            literal = {k: v for k, v in given.items() if re.fullmatch(r"[\w./:-]+", v)}  # not `$(git ...)` or JSON
            assert set(given) <= set(run.parameters), (command, run.parameters)
            assert {k: str(run.parameters[k]) for k in literal} == literal, (command, run.parameters)
            assert run.state.is_scheduled(), f"{command}: {run.state.name}, but the pool is paused"
    finally:
        for run_id in created:
            prefect_client.delete_flow_run(run_id)
