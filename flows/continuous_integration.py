"""Continuous integration: test suites by marker → model check → Terraform checks → summary → `mlops.ci.passed`."""

from __future__ import annotations

import shutil
import time
from pathlib import Path
from typing import Any

from prefect import flow, runtime
from prefect.states import State

from mlops import ci
from mlops.config import PROJECT_ROOT, load_config, stack_use_cases
from mlops.domain.checks import Check, failures
from tasks.ci import check_infrastructure, check_model, checkout_commit, emit_ci_passed, publish_summary, run_test_suite
from tasks.runs import run_name, run_parameter


def _run_name() -> str:
    return run_name("ci", (run_parameter("sha") or "HEAD")[:12])


def _verdict(name: str, state: State, started: float) -> Check:
    """A check whose task crashed is a failed check: the other checks still run."""
    if state.is_completed():
        return state.result()
    return Check(
        name=name,
        passed=False,
        seconds=round(time.perf_counter() - started, 1),
        detail=f"{state.name}: {state.message or 'no message'}"[:1500],
    )


@flow(name="continuous-integration", flow_run_name=_run_name)
def continuous_integration(
    sha: str | None = None,
    repo_path: str | None = None,
    checks: list[ci.CheckName] | None = None,
) -> dict[str, Any]:
    """Test one commit; when every check passes, emit `mlops.ci.passed`, which starts continuous training.

    The commit is checked out privately (uncommitted edits are not tested; the repository is not
    touched). Its pytest suites run by marker as subprocesses importing the checkout's code, each
    in an environment of its own (no stack, a throwaway MLflow store). The model check takes the
    `champion` from MLflow, or trains a small model on one month when there is none, and checks the
    gate floors, its output schema against its signature, determinism, and in-process latency
    against `slo.p95_ms`. Terraform runs `fmt -check`, `validate` and `test` on a copy of infra/.
    Every check runs even when one fails; the summary artifact lists each with its duration. Then,
    if all passed, `mlops.ci.passed` is emitted for resource `mlops.commit.<sha>` once per use case the
    commit retrains (labelled `mlops.use-case`: those whose folder changed, or all of them when the shared
    code did; each use case's own tests ran in the suites); otherwise the run fails, naming the failing
    checks, and nothing is trained.

    Args:
        sha: The commit to test (any revision git understands). Default: HEAD of `repo_path`.
        repo_path: The git repository holding the commit. Default: this project's root.
        checks: Which checks to run, from "unit", "integration", "data", "model", "infra".
            Default: all of them. (`e2e` never runs here: it starts its own stack.)
    """
    config = load_config()
    selected = ci.select_checks(checks)
    repo = Path(repo_path) if repo_path else PROJECT_ROOT
    workdir = config.state_dir / "ci" / str(runtime.flow_run.id)
    results: list[Check] = []
    started = time.perf_counter()
    checkout = checkout_commit(repo, sha, workdir, return_state=True)
    retrain: list[str] = []
    if not checkout.is_completed():
        results.append(_verdict("checkout", checkout, started))
        commit_sha = sha or "HEAD"
    else:
        commit = checkout.result()
        commit_sha = commit.sha
        retrain = ci.use_cases_to_retrain(ci.changed_paths(commit), stack_use_cases())
        for marker in (m for m in selected if m in ci.TEST_SUITES):
            started = time.perf_counter()
            results.append(
                _verdict(f"{marker} tests", run_test_suite(commit, marker, workdir, return_state=True), started)
            )
        if "model" in selected:
            started = time.perf_counter()
            results.append(_verdict("model check", check_model(config, return_state=True), started))
        if "infra" in selected:
            started = time.perf_counter()
            results.append(
                _verdict("infrastructure", check_infrastructure(commit, workdir, return_state=True), started)
            )

    summary = ci.summarize(commit_sha, results)
    publish_summary(summary)
    for scratch in ("checkout", "sandbox", "terraform"):  # the JUnit reports stay, under <state>/ci/<run id>/reports
        shutil.rmtree(workdir / scratch, ignore_errors=True)
    if not summary.passed:
        raise ci.CIFailed(f"CI failed for {commit_sha}: " + "; ".join(failures(summary.checks)))
    emit_ci_passed(summary, retrain)
    return {**ci.summary_json(summary), "retrain": retrain}
