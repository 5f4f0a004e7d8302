"""A commit → CI → `mlops.ci.passed` → CT with that sha, on the real stack; a commit that breaks a data test trains nothing.

Commits are made in a clone of this repository (its committed state) under tmp_path: the working
tree is never touched. The worker runs the CI flow from the repo root, and the flow tests the
clone's commit. CI runs the fast checks only (data, model, infra): the unit and integration suites
have their own runs in `make test`, and integration inside e2e would take minutes.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from mlops.config import PROJECT_ROOT, load_config
from mlops.platform import hooks
from mlops.platform.settings import CI_CHECKS_ENV, STATE_DIR_ENV
from tests.e2e.conftest import CD_DEPLOYMENT, CT_DEPLOYMENT, flow_run_artifacts, flow_runs, one_flow_run

pytestmark = pytest.mark.e2e

CI_DEPLOYMENT = "continuous-integration/on-commit"
FAST_CHECKS = ["data", "model", "infra"]
HOOK_CHECKS = [
    "data",
    "infra",
]  # the failing commit's: the check it breaks and one more (the passing commit runs the model's)


def _git(repo: Path, *args: str, env: dict[str, str] | None = None) -> str:
    command = ["git", "-c", "user.name=e2e", "-c", "user.email=e2e@example.com", *args]
    return subprocess.run(
        command, cwd=repo, env=env, check=True, capture_output=True, text=True, timeout=60
    ).stdout.strip()


@pytest.fixture
def clone(tmp_path: Path) -> Path:
    path = tmp_path / "clone"
    _git(tmp_path, "clone", "--quiet", str(PROJECT_ROOT), str(path))
    return path


def _commit(
    repo: Path, relative: str, edit: Callable[[str], str], message: str, env: dict[str, str] | None = None
) -> str:
    target = repo / relative
    target.write_text(edit(target.read_text()))
    _git(repo, "commit", "--quiet", "--all", "--message", message, env=env)
    return _git(repo, "rev-parse", "HEAD")


def test_a_commit_that_passes_ci_starts_continuous_training_with_its_sha(
    stack, prefect_client, wait_for_flow_run, mlflow_client, clone
):
    from prefect.deployments import run_deployment

    sha = _commit(
        clone, "flows/continuous_training.py", lambda text: text + "\n# e2e: a harmless change\n", "A harmless change"
    )

    ci_run = run_deployment(
        CI_DEPLOYMENT, parameters={"sha": sha, "repo_path": str(clone), "checks": FAST_CHECKS}, timeout=0
    )
    state = wait_for_flow_run(ci_run.id, timeout=420)
    ci_run = prefect_client.read_flow_run(ci_run.id)
    print(f"CI ({', '.join(FAST_CHECKS)}): {ci_run.total_run_time.total_seconds():.1f} s")
    assert state.is_completed(), state
    artifacts = flow_run_artifacts(prefect_client, ci_run.id)
    assert artifacts["ci-summary"].startswith("# CI PASSED") and sha in artifacts["ci-summary"]
    assert {"ci-data-tests", "ci-model-tests", "ci-model-check", "ci-model-latency", "ci-infra"} <= set(artifacts)

    # The automation on continuous-training/retrain turns mlops.ci.passed into a CT run for this sha.
    ct = one_flow_run(prefect_client, CT_DEPLOYMENT, f"commit {sha}", where=lambda r: r.parameters.get("commit") == sha)
    print(f"CI end → CT flow run created: {(ct.created - ci_run.end_time).total_seconds():+.1f} s")
    assert ct.parameters["reason"] == "ci"
    assert wait_for_flow_run(ct.id, timeout=420).is_completed()
    assert f"commit:{sha}" in prefect_client.read_flow_run(ct.id).tags
    config = load_config()
    experiment = mlflow_client.get_experiment_by_name(config.tracking.experiment)
    [run] = mlflow_client.search_runs([experiment.experiment_id], f"tags.prefect_flow_run_id = '{ct.id}'")
    assert run.data.tags["git_commit"] == sha and run.data.tags["trigger_reason"] == "ci"
    [version] = mlflow_client.search_model_versions(
        f"name = '{config.tracking.model_name}' and tags.prefect_flow_run_id = '{ct.id}'"
    )
    assert version.tags["git_commit"] == sha

    # The registration starts a delivery; let it finish here rather than run on into other tests.
    cd = one_flow_run(prefect_client, CD_DEPLOYMENT, f"version {version.version}", version=version.version)
    assert wait_for_flow_run(cd.id, timeout=420).is_final()


def test_a_commit_that_breaks_a_data_test_fails_ci_from_the_hook_and_trains_nothing(
    stack, prefect_client, wait_for_flow_run, clone
):
    # The developer's side: `mlops hooks`, and the stack's env file (here with a quick set of checks).
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

    sha = _commit(
        clone, "contracts/nycflights13.json", forbid_missing_temperatures, "Temperatures are never missing", env=shell
    )
    # The commit returned before the CI it started finished: the hook does not wait for CI.
    started = flow_runs(prefect_client, CI_DEPLOYMENT, sha=sha)
    assert not started or not started[0].state or not started[0].state.is_final(), "the commit waited for CI to end"

    ci_run = one_flow_run(prefect_client, CI_DEPLOYMENT, f"commit {sha}", timeout=60, sha=sha)
    assert ci_run.parameters["repo_path"] == str(clone) and ci_run.parameters["checks"] == HOOK_CHECKS
    state = wait_for_flow_run(ci_run.id, timeout=300)
    assert state.is_failed(), state
    artifacts = flow_run_artifacts(prefect_client, ci_run.id)
    assert artifacts["ci-summary"].startswith("# CI FAILED: data tests")
    assert "| infrastructure | pass |" in artifacts["ci-summary"], artifacts[
        "ci-summary"
    ]  # a failing check does not stop the others
    assert "test_every_month_of_the_reference_year_meets_the_contract_and_quality_rules" in artifacts["ci-data-tests"]

    # No mlops.ci.passed, so no CT run for this sha: watch for a while after CI ended.
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        assert not flow_runs(prefect_client, CT_DEPLOYMENT, commit=sha), "CI failed, yet CT ran"
        time.sleep(1)

    # The hook's background request has ended: it exits right after creating the run.
    log = clone / ".mlops" / "logs" / "post-commit.log"
    deadline = time.monotonic() + 30
    while f"{sha}: prefect exited" not in log.read_text() and time.monotonic() < deadline:
        time.sleep(0.5)
    assert f"{sha}: prefect exited 0" in log.read_text(), log.read_text()
