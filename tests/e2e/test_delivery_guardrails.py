"""CD's guardrails on the real stack: manual approval on the worker, and a rollback by hand from the command line.

The session's stack delivers automatically; the approval runs read their own config
(`delivery.approval: manual`) through the deployment's job variables (MLOPS_CONFIG in the flow
run's environment), as a team would give one deployment its own settings. While a test registers
its versions, the deploy-model trigger is paused, so the only CD run of each version is the one
the test starts.
"""

from __future__ import annotations

import os
import shlex
import subprocess
from collections.abc import Iterator
from pathlib import Path

import mlflow
import pytest

from mlops import waiting
from mlops.config import load_config
from mlops.platform import on_stack as approvals
from mlops.platform.automations import prefect_settings
from tests.conftest import write_config
from tests.e2e.conftest import (
    CD_DEPLOYMENT,
    OTHER_USE_CASE,
    RUN_TIMEOUT_S,
    explain,
    finished,
    flow_run_artifacts,
    served_version,
)
from tests.integration.test_continuous_delivery import _lineage

DELIVER_TRIGGER = "deliver each registered version to its use case"  # prefect.yaml, deploy-model's trigger

pytestmark = pytest.mark.e2e

SILENCE_S = 10  # no approval within this: rejected (the config's minimum)


@pytest.fixture
def cd_trigger_paused(prefect_client) -> Iterator[None]:
    """The deploy-model deployment's event trigger (named in prefect.yaml), paused."""
    [trigger] = prefect_client.read_automations_by_name(DELIVER_TRIGGER)
    prefect_client.pause_automation(trigger.id)
    try:
        yield
    finally:
        prefect_client.resume_automation(trigger.id)


def _paused(stack, prefect_client, name: str, version: str, timeout: float = RUN_TIMEOUT_S):
    def paused():
        try:
            return approvals.paused_delivery(prefect_client, name, version, name)
        except approvals.NoPendingApproval:
            return None

    return waiting.wait_for(
        paused,
        timeout=timeout,
        what=f"a CD run of v{version} paused for approval",
        interval=1.0,
        seen=lambda: explain(stack, prefect_client),
    )


def _deliver_with(config_path: Path, version: str):
    from prefect.deployments import run_deployment

    return run_deployment(
        CD_DEPLOYMENT,
        parameters={"version": version},
        timeout=0,
        job_variables={"env": {"MLOPS_CONFIG": str(config_path)}},
    )


def _copy(mlflow_client, name: str, version: str) -> str:
    """The version's logged model registered again: a new, undecided version with its lineage."""
    found = mlflow_client.get_model_version(name, version)
    return str(mlflow.register_model(found.source, name, tags=_lineage(found.tags)).version)


def test_a_manual_approval_waits_on_the_worker_promotes_when_approved_and_rejects_when_nobody_answers(
    stack, prefect_client, wait_for_flow_run, mlflow_client, champion, cd_trigger_paused, e2e_config, tmp_path
):
    config = load_config()
    name, port = config.tracking.model_name, config.serving.production_port

    def copy() -> str:
        return _copy(mlflow_client, name, champion)

    # Approved through the API: the run waits Paused on the worker, then promotes.
    manual = write_config(e2e_config, tmp_path, {"delivery": {"approval": "manual", "approval_timeout_s": 600}})
    approved = copy()
    run = _deliver_with(manual, approved)
    paused = _paused(stack, prefect_client, name, approved)
    assert paused.id == run.id and served_version(port) == champion
    assert mlflow_client.get_model_version(name, approved).tags.get("deployment") is None
    with prefect_settings(stack):
        approvals.answer(name, approved, approve=True, approver="alice", comment="e2e", default_model=name)
    state = wait_for_flow_run(run.id)
    assert state.is_completed() and state.name == "Completed", state
    # Started with the version alone (as the README's command does): the run is named from the config's model.
    assert prefect_client.read_flow_run(run.id).name == f"cd-{name}-v{approved}"
    tags = mlflow_client.get_model_version(name, approved).tags
    assert (tags["deployment"], tags["approval"], tags["approval_by"], tags["approval_comment"]) == (
        "promoted",
        "approved",
        "alice",
        "e2e",
    ), tags
    assert "T" in tags["approval_at"]
    assert "| approval | pass | approved by alice" in flow_run_artifacts(prefect_client, run.id)["cd-decision"]
    assert served_version(port) == approved

    # Nobody answers within approval_timeout_s: rejected, production keeps the version just approved.
    silent = write_config(e2e_config, tmp_path, {"delivery": {"approval": "manual", "approval_timeout_s": SILENCE_S}})
    unanswered = copy()
    run = _deliver_with(silent, unanswered)
    state = wait_for_flow_run(run.id)
    if state.is_failed() and "never resumed" in str(state.message):
        # The server's own pause expiry can mark the run Failed a moment before the run, which noticed the same
        # timeout, sets itself Running again to reject and roll back: the run's end is the state after that.
        state = waiting.wait_for(
            lambda: (s := prefect_client.read_flow_run(run.id).state) is not None and s.name == "Rejected" and s,
            timeout=120,
            what="the unanswered CD run to end Rejected",
            seen=lambda: prefect_client.read_flow_run(run.id).state,
        )
    assert state.name == "Rejected" and f"approval: no answer within {SILENCE_S} s" in str(state.message), state
    tags = mlflow_client.get_model_version(name, unanswered).tags
    assert (tags["deployment"], tags["approval"], tags["approval_by"]) == ("rejected", "timed_out", "nobody"), tags
    assert str(mlflow_client.get_model_version_by_alias(name, "champion").version) == approved
    assert served_version(port) == approved
    assert served_version(config.serving.staging_port) == approved  # staging rolled back to the champion
    history = flow_run_artifacts(prefect_client, run.id)["production-history"]  # kept up to date by each CD run
    assert history.index(f'"v{unanswered}"') < history.index(f'"v{approved} (serving)"'), history  # newest first
    assert f"approval: no answer within {SILENCE_S} s" in history and "approved by alice" in history, history


def _previous_champion(stack, mlflow_client, name: str, champion: str, config_path: Path) -> str:
    """The `previous_champion`; when there is none, a copy of the champion is delivered over it first."""
    from mlops.adapters import registry

    found = registry.aliased(mlflow_client, name, registry.PREVIOUS_CHAMPION)
    if found is not None:
        return found.version
    run = _deliver_with(config_path, _copy(mlflow_client, name, champion))
    state = finished(stack, run.id, "CD of a copy of the champion, for a previous_champion").state
    assert state.name == "Completed", state
    return champion


def test_mlops_rollback_puts_production_back_on_the_previous_champion_and_notifies(
    stack, mlflow_client, champion, cd_trigger_paused, e2e_config, notification_receiver, other_delivered
):
    """`mlops rollback` from a shell that sourced the stack's env: the rollback deployment on the worker,
    then the CLI's own wait for it; the other use cases on the stack keep their production. (The watch that
    rolls a promotion back by itself is tested in-process with real services: tests/integration/test_delivery_failures.py.)"""
    other_pid = service_pid(other_delivered.production)
    config = load_config()
    name, port = config.tracking.model_name, config.serving.production_port
    previous = _previous_champion(stack, mlflow_client, name, champion, e2e_config)
    current = str(mlflow_client.get_model_version_by_alias(name, "champion").version)
    assert served_version(port) == current != previous

    shell = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "MLFLOW_", "MLOPS_STATE"))}
    command = f"source {shlex.quote(str(stack.env_file))} && mlops rollback --reason 'e2e: complaints' --by alice"
    done = subprocess.run(["bash", "-c", command], env=shell, capture_output=True, text=True, timeout=RUN_TIMEOUT_S)
    assert done.returncode == 0, f"{done.stdout}\n{done.stderr}"
    assert f"production back on v{previous}" in done.stdout, done.stdout

    assert str(mlflow_client.get_model_version_by_alias(name, "champion").version) == previous
    assert served_version(port) == previous
    tags = mlflow_client.get_model_version(name, current).tags
    assert tags["rolled_back"] == "by alice: e2e: complaints", tags
    about = f"CD rolled back {name} v{current}"
    [text] = notification_receiver.wait_for(about)
    assert "by alice: e2e: complaints" in text, text
    # One use case's rollback leaves the other's production alone: same version, same process, same champion.
    assert served_version(other_delivered.production) == other_delivered.version
    assert service_pid(other_delivered.production) == other_pid, "the other use case's production was restarted"
    other_model = load_config(use_case=OTHER_USE_CASE).tracking.model_name
    assert str(mlflow_client.get_model_version_by_alias(other_model, "champion").version) == other_delivered.version


def service_pid(port: int) -> int:
    """The pid of the process listening on `port`."""
    import psutil

    [pid] = {c.pid for c in psutil.net_connections("tcp") if c.status == "LISTEN" and c.laddr.port == port and c.pid}
    return pid


def test_a_shadow_delivery_on_the_stack_promotes_a_candidate_that_answers_alike_and_rejects_one_that_does_not(
    stack, prefect_client, wait_for_flow_run, mlflow_client, champion, cd_trigger_paused, e2e_config, tmp_path
):
    """delivery.strategy: shadow on the worker: production serves the champion with the candidate scoring the
    traffic unseen; the shadow gate's numbers decide, as `cd-decision` shows."""
    from tests.integration.test_continuous_delivery import SHADOW, production_traffic
    from tests.integration.test_delivery_failures import _fit, _january_fitted_part, _register

    config = load_config()
    name, port = config.tracking.model_name, config.serving.production_port
    alike = _copy(mlflow_client, name, champion)
    with production_traffic(config):
        run = _deliver_with(write_config(e2e_config, tmp_path, SHADOW), alike)
        state = wait_for_flow_run(run.id)
    assert state.name == "Completed", state
    decision = flow_run_artifacts(prefect_client, run.id)["cd-decision"]
    assert "| shadow agreement | pass |" in decision and "| shadow rows | pass |" in decision, decision
    assert served_version(port) == alike

    config_of = load_config(e2e_config)
    train = _january_fitted_part(config_of)
    flipped = _fit(config_of, train.assign(arr_delayed=1 - train["arr_delayed"]), max_iter=30)
    bad = _register(
        config_of,
        flipped,
        train.head(200)[config_of.dataset.features],
        _lineage(mlflow_client.get_model_version(name, alike).tags),
    )
    lenient = {**SHADOW, "gates.floors": {}, "gates.min_gain": -1.0, "gates.max_segment_drop": 1.0}
    with production_traffic(config):
        run = _deliver_with(write_config(e2e_config, tmp_path, lenient), bad)
        state = wait_for_flow_run(run.id)
    assert state.name == "Rejected" and "shadow agreement" in str(state.message), state
    assert "| shadow agreement | **FAIL** |" in flow_run_artifacts(prefect_client, run.id)["cd-decision"]
    assert (
        served_version(port) == alike
        and str(mlflow_client.get_model_version_by_alias(name, "champion").version) == alike
    )
