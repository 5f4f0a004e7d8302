"""CI's failure paths in-process: a failing check fails the run, names itself in `ci-summary`, and emits nothing.

The commit under test is in a clone of this repository (its committed state) under tmp_path,
as tests/e2e/test_ci_automation.py makes one: the working tree and its git state are never touched.
"""

from __future__ import annotations

import asyncio
import subprocess
from pathlib import Path

import pytest
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId
from prefect.events.filters import EventFilter, EventNameFilter, EventResourceFilter

from flows.continuous_integration import continuous_integration
from mlops.config import DEFAULT_CONFIG, PROJECT_ROOT
from tasks.ci import CI_PASSED
from tests.conftest import write_config
from tests.integration.conftest import read_artifacts

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("prefect_backend")]


def _git(repo: Path, *args: str) -> str:
    command = ["git", "-c", "user.name=ci-test", "-c", "user.email=ci-test@example.com", *args]
    return subprocess.run(command, cwd=repo, check=True, capture_output=True, text=True, timeout=120).stdout.strip()


@pytest.fixture
def clone(tmp_path: Path) -> Path:
    path = tmp_path / "clone"
    _git(tmp_path, "clone", "--quiet", str(PROJECT_ROOT), str(path))
    return path


def _task_runs_and_events(flow_run_id, sha: str) -> tuple[list[str], list[str]]:
    """The task runs the CI run made, and the `mlops.ci.passed` events the server holds for `sha`."""

    async def read():
        async with get_client() as client:
            tasks = await client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id])))
            events = await client.read_events(
                filter=EventFilter(
                    event=EventNameFilter(name=[CI_PASSED]), resource=EventResourceFilter(id=[f"mlops.commit.{sha}"])
                ),
                limit=50,
            )
            return [t.name for t in tasks], [e.event for e in events.events]

    return asyncio.run(read())


def _failed_run(state, failing: str, sha: str) -> str:
    """The run failed naming `failing`, published a summary saying so, and emitted nothing; returns the summary."""
    assert state.is_failed(), state
    assert f"CI failed for {sha}" in str(state.message) and failing in str(state.message), state.message
    flow_run_id = state.state_details.flow_run_id
    summary = read_artifacts(flow_run_id)["ci-summary"]
    assert summary.startswith(f"# CI FAILED: {failing}"), summary
    assert f"| {failing} | **FAIL** |" in summary and "No event" in summary, summary
    tasks, events = _task_runs_and_events(flow_run_id, sha)
    # The event is emitted by that task only: it did not run, so no event can arrive later either.
    assert not any(name.startswith("emit_ci_passed") for name in tasks), tasks
    assert events == [], events
    return summary


def test_a_model_below_the_floors_fails_ci_naming_the_model_check(isolated, monkeypatch, clone):
    unreachable = write_config(
        DEFAULT_CONFIG,
        isolated,
        {
            "window": {"as_of": "2013-02-01", "months": 1},  # no champion: a small model on January
            "gates.floors": {"roc_auc": 0.99},
        },
    )
    monkeypatch.setenv("MLOPS_CONFIG", str(unreachable))
    sha = _git(clone, "rev-parse", "HEAD")

    state = continuous_integration(repo_path=str(clone), checks=["model"], return_state=True)

    summary = _failed_run(state, "model check", sha)
    assert "floor roc_auc" in summary and "required 0.99" in summary, summary
    assert "ci-model-check" in read_artifacts(state.state_details.flow_run_id)


def test_an_unformatted_terraform_file_fails_ci_naming_the_infrastructure_check(isolated, clone):
    main_tf = clone / "infra" / "service" / "main.tf"
    main_tf.write_text(main_tf.read_text().replace("  required_version = ", "  required_version     =   ", 1))
    _git(clone, "commit", "--quiet", "--all", "--message", "Misaligned, as an editor without terraform fmt leaves it")
    sha = _git(clone, "rev-parse", "HEAD")

    state = continuous_integration(sha=sha, repo_path=str(clone), checks=["infra"], return_state=True)

    summary = _failed_run(state, "infrastructure", sha)
    assert "fmt -check" in summary and "service/main.tf" in summary, summary
    infra = read_artifacts(state.state_details.flow_run_id)["ci-infra"]
    assert "validate service" in infra and "test service" in infra  # the other steps still ran
