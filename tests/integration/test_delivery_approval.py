"""Manual approval (`delivery.approval: manual`): CD pauses after the staging gates until a person answers.

In-process with the real parts (Terraform, the model service, locust, a throwaway Prefect API):
the CD run waits Paused with the Resume form Prefect's UI shows; the answer is sent as the UI,
`mlops approve` and the API send it (`mlops.platform.approvals.answer`, Prefect's `resume_flow_run`).
"""

from __future__ import annotations

import threading
import time
from datetime import date
from typing import Any

import pytest
from mlflow.tracking import MlflowClient
from prefect.client.orchestration import get_client

from flows.continuous_delivery import continuous_delivery
from flows.continuous_training import continuous_training
from mlops.config import load_config
from mlops.platform import approvals
from tests.conftest import write_config
from tests.integration.conftest import read_artifacts
from tests.integration.test_continuous_delivery import (  # noqa: F401
    MODEL,
    _lineage,
    _served_version,
    delivery_config,
)

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("prefect_backend")]


def _deliver_in_background(version: str) -> tuple[threading.Thread, dict[str, Any]]:
    outcome: dict[str, Any] = {}

    def run() -> None:
        outcome["state"] = continuous_delivery(version=version, return_state=True)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread, outcome


def _paused_run(version: str, timeout: float = 300) -> Any:
    """The CD run of the version once it waits for approval (polled: it first passes the staging gates)."""
    deadline = time.monotonic() + timeout
    with get_client(sync_client=True) as client:
        while time.monotonic() < deadline:
            try:
                return approvals.paused_delivery(client, MODEL, version, MODEL)
            except approvals.NoPendingApproval:
                time.sleep(1)
    pytest.fail(f"no CD run of v{version} paused for approval within {timeout:.0f} s")


def _finished(thread: threading.Thread, outcome: dict[str, Any]) -> Any:
    thread.join(timeout=300)
    assert not thread.is_alive(), "the CD run did not finish within 300 s of the answer"
    return outcome["state"]


def test_cd_waits_for_approval_promotes_when_approved_and_rejects_when_nobody_answers(delivery_config, monkeypatch):  # noqa: F811
    manual = write_config(delivery_config, delivery_config.parent, {"delivery": {"approval": "manual", "approval_timeout_s": 10}})
    assert continuous_training(as_of=date(2013, 2, 1), window_months=1)["version"] == "1"
    monkeypatch.setenv("MLOPS_CONFIG", str(manual))
    config = load_config(manual)
    client = MlflowClient()

    # Approved: the run waits Paused, with the gate summary on its form, then promotes on the answer.
    slow = write_config(manual, manual.parent, {"delivery.approval_timeout_s": 600})
    monkeypatch.setenv("MLOPS_CONFIG", str(slow))
    thread, outcome = _deliver_in_background("1")
    paused = _paused_run("1")
    assert paused.state.name == "Paused" and client.get_model_version(MODEL, "1").tags.get("deployment") is None
    assert approvals.answer(MODEL, "1", approve=True, approver="alice", comment="gates look right", default_model=MODEL) == paused.name
    state = _finished(thread, outcome)
    assert state.is_completed() and state.result()["status"] == "promoted", state
    tags = client.get_model_version(MODEL, "1").tags
    assert (tags["deployment"], tags["approval"], tags["approval_by"], tags["approval_comment"]) == (
        "promoted", "approved", "alice", "gates look right")
    assert "T" in tags["approval_at"]
    decision = read_artifacts(state.state_details.flow_run_id)["cd-decision"]
    assert "| approval | pass | approved by alice" in decision, decision
    assert _served_version(config.serving.production_port) == "1"

    # Nobody answers: after approval_timeout_s the version is rejected and staging rolls back.
    monkeypatch.setenv("MLOPS_CONFIG", str(manual))
    found = client.get_model_version(MODEL, "1")
    client.create_model_version(MODEL, found.source, run_id=found.run_id, tags=_lineage(found.tags))
    thread, outcome = _deliver_in_background("2")
    state = _finished(thread, outcome)
    assert state.name == "Rejected", state
    reason = state.result()["reason"]
    assert reason.startswith("approval: no answer within 10 s; rejected at"), reason
    tags = client.get_model_version(MODEL, "2").tags
    assert (tags["deployment"], tags["approval"], tags["approval_by"]) == ("rejected", "timed_out", "nobody")
    assert str(client.get_model_version_by_alias(MODEL, "champion").version) == "1"
    assert _served_version(config.serving.production_port) == "1"
    assert _served_version(config.serving.staging_port) == "1"
    history = read_artifacts(state.state_details.flow_run_id)["production-history"]  # kept up to date by each CD run
    assert history.index('"v2"') < history.index('"v1 (serving)"'), history  # newest first
    assert "approval: no answer within 10 s" in history and "approved by alice" in history, history
