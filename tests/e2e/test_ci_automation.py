"""A commit → CI → `mlops.ci.passed` → CT with that sha, on the real stack; a commit that breaks a data test trains nothing.

Commits are made in a clone of this repository (its committed state) under tmp_path: the working
tree is never touched. The worker runs the CI flow from the repo root, and the flow tests the
clone's commit. The passing commit is the session's own loop (`delivered`), run with a quick set of
checks: what this proves is the wiring, commit → checks → event → CT; the checks themselves are the
rest of `make test`.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest

from mlops import waiting
from mlops.config import load_config
from mlops.platform import hooks
from tasks.ci import CI_PASSED
from tests.e2e.conftest import (
    CI_DEPLOYMENT,
    CT_DEPLOYMENT,
    QUICK_CHECKS,
    clone_of_this_repo,
    commit,
    finished,
    flow_run_artifacts,
    flow_runs,
    one_flow_run,
)

pytestmark = pytest.mark.e2e
CI_CHECKS_ENV, STATE_DIR_ENV = "MLOPS_CI_CHECKS", "MLOPS_STATE_DIR"  # read by post-commit.sh; the stack's settings

HOOK_CHECKS = ["data", "infra"]  # the failing commit's: the check it breaks and one more that still runs


def test_a_commit_that_passes_ci_starts_continuous_training_with_its_sha(delivered, prefect_client):
    sha, ci, ct = delivered.sha, delivered.ci, delivered.ct
    print(f"CI ({', '.join(QUICK_CHECKS)}): {ci.total_run_time.total_seconds():.1f} s")
    artifacts = flow_run_artifacts(prefect_client, ci.id)
    assert artifacts["ci-summary"].startswith("# CI PASSED") and sha in artifacts["ci-summary"]
    assert "ci-infra" in artifacts and "| infrastructure | pass |" in artifacts["ci-summary"]

    # The automation on continuous-training/retrain turned mlops.ci.passed into this CT run.
    print(f"CI end → CT flow run created: {(ct.created - ci.end_time).total_seconds():+.1f} s")
    assert ct.parameters["reason"] == "ci" and ct.parameters["commit"] == sha
    assert f"commit:{sha}" in ct.tags
    assert delivered.version_tags["git_commit"] == sha and delivered.version_tags["trigger_reason"] == "ci"


def test_the_training_run_records_the_commit_in_mlflow(delivered, mlflow_client):
    config = load_config()
    experiment = mlflow_client.get_experiment_by_name(config.tracking.experiment)
    [run] = mlflow_client.search_runs([experiment.experiment_id], f"tags.prefect_flow_run_id = '{delivered.ct.id}'")
    assert run.data.tags["git_commit"] == delivered.sha and run.data.tags["trigger_reason"] == "ci"


def _ci_passed_events(prefect_client, sha: str) -> list:
    from prefect.events.filters import EventFilter, EventNameFilter, EventResourceFilter

    page = prefect_client.read_events(
        filter=EventFilter(
            event=EventNameFilter(name=[CI_PASSED]), resource=EventResourceFilter(id=[f"mlops.commit.{sha}"])
        ),
        limit=50,
    )
    return page.events


def test_a_commit_that_breaks_a_data_test_fails_ci_from_the_hook_and_trains_nothing(
    stack, prefect_client, delivered, tmp_path
):
    # The developer's side: `mlops hooks`, and the stack's env file (here with a quick set of checks).
    clone = clone_of_this_repo(tmp_path)
    hooks.install(clone, bin_dir=Path(sys.executable).parent)
    (clone / ".mlops").mkdir()
    checks = ",".join(HOOK_CHECKS)
    (clone / ".mlops" / "env").write_text(
        f"export PREFECT_API_URL={stack.prefect_api_url}\nexport {CI_CHECKS_ENV}={checks}\n"
    )
    shell = {k: v for k, v in os.environ.items() if k not in (STATE_DIR_ENV, "PREFECT_API_URL", CI_CHECKS_ENV)}

    def forbid_missing_temperatures(text: str) -> str:
        contract = json.loads(text)
        [temp] = [c for c in contract["columns"] if c["name"] == "temp"]
        temp.update(nullable=False, max_missing_share=0.0)  # the data has a few missing temperatures
        return json.dumps(contract, indent=2) + "\n"

    sha = commit(
        clone,
        "usecases/flights/contract.json",
        forbid_missing_temperatures,
        "Temperatures are never missing",
        env=shell,
    )
    # The commit returned before the CI it started finished: the hook does not wait for CI.
    started = flow_runs(prefect_client, CI_DEPLOYMENT, sha=sha)
    assert not started or not started[0].state or not started[0].state.is_final(), "the commit waited for CI to end"

    ci_run = one_flow_run(prefect_client, CI_DEPLOYMENT, f"commit {sha}", timeout=60, sha=sha)
    assert ci_run.parameters["repo_path"] == str(clone) and ci_run.parameters["checks"] == HOOK_CHECKS
    state = finished(stack, ci_run.id, f"CI of {sha} from the hook").state
    assert state.is_failed(), state
    artifacts = flow_run_artifacts(prefect_client, ci_run.id)
    assert artifacts["ci-summary"].startswith("# CI FAILED: data tests")
    assert "| infrastructure | pass |" in artifacts["ci-summary"], artifacts["ci-summary"]  # the others still ran
    assert "test_every_month_of_the_reference_year_meets_the_contract_and_quality_rules" in artifacts["ci-data-tests"]

    # CT starts only from mlops.ci.passed, which a failed CI run never emits (its task did not run):
    # none exists for this sha, while the passing commit's did reach the server.
    tasks = [t.name for t in prefect_client.read_task_runs(flow_run_filter=_of_run(ci_run.id))]
    assert not any(name.startswith("emit_ci_passed") for name in tasks), tasks
    assert _ci_passed_events(prefect_client, sha) == []
    assert len(_ci_passed_events(prefect_client, delivered.sha)) == 1
    assert not flow_runs(prefect_client, CT_DEPLOYMENT, commit=sha), "CI failed, yet CT ran"

    # The hook's background request has ended: it exits right after creating the run.
    log = clone / ".mlops" / "logs" / "post-commit.log"
    waiting.wait_for(
        lambda: f"{sha}: prefect exited" in log.read_text(),
        timeout=30,
        what="the hook's `prefect deployment run` exiting",
        seen=log.read_text,
    )
    assert f"{sha}: prefect exited 0" in log.read_text(), log.read_text()


def _of_run(flow_run_id):
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    return FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id]))
