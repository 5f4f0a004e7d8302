"""A registration the webhook lost is delivered by the reconciliation, once, on the real stack.

The version is registered while the webhook receiver and the Prefect server are both down, then
`mlops up` brings them back: the version is still delivered. (With only the Prefect server down,
the receiver holds each delivery while it retries the connection, and MLflow's webhook retries
can outlast a short outage, so the event may arrive late instead of being lost: the receiver down
makes the loss certain, and MLflow gives up within seconds.)
"""

from __future__ import annotations

from uuid import UUID

import mlflow
import pytest

from flows.reconciliation import RECONCILE_DEPLOYMENT, start_reconciliation
from mlops import processes, waiting
from mlops.config import load_config
from mlops.platform.stack import parts, up
from tests.e2e.conftest import CD_DEPLOYMENT, finished, flow_runs, one_flow_run

pytestmark = pytest.mark.e2e

# CD's decision and CT's run are not copied: the new version must look undecided and not come from a CT run
NOT_LINEAGE = {"deployment", "deployment_gates", "deployment_run", "rejected", "rolled_back", "prefect_flow_run_id"}
GAVE_UP = "Failed to send webhook to"  # what MLflow logs once its retries of a delivery are spent (e2e: 1 retry)


def _artifact(prefect_client, flow_run_id, key: str) -> str:
    from prefect.client.schemas.filters import (
        ArtifactFilter,
        ArtifactFilterFlowRunId,
        ArtifactFilterKey,
    )

    [found] = prefect_client.read_artifacts(
        artifact_filter=ArtifactFilter(
            flow_run_id=ArtifactFilterFlowRunId(any_=[flow_run_id]), key=ArtifactFilterKey(any_=[key])
        )
    )
    return str(found.data)


def test_a_version_registered_while_the_receiver_and_prefect_are_down_is_delivered_once_after_up(
    stack, prefect_client, mlflow_client, champion
):
    from prefect.deployments import run_deployment

    [schedule] = prefect_client.read_deployment_by_name(RECONCILE_DEPLOYMENT).schedules
    assert schedule.active and schedule.schedule.interval.total_seconds() == 300

    name = load_config().tracking.model_name
    original = mlflow_client.get_model_version(name, champion)
    receiver, server, mlflow_server = (parts(stack)[key] for key in ("receiver", "prefect", "mlflow"))
    gave_up_before = processes.tail(mlflow_server.log_file, 100_000).count(f"{GAVE_UP} {stack.webhook_url}")
    assert processes.stop(receiver.pid_file), "the webhook receiver was not running"
    assert processes.stop(server.pid_file), "the Prefect server was not running"
    try:
        # The champion's model again, with its lineage: MLflow calls the webhook, nobody answers.
        tags = {k: v for k, v in original.tags.items() if k not in NOT_LINEAGE}
        version = str(mlflow.register_model(original.source, name, tags=tags).version)

        def gave_up() -> bool:
            return (
                processes.tail(mlflow_server.log_file, 100_000).count(f"{GAVE_UP} {stack.webhook_url}") > gave_up_before
            )

        waiting.wait_for(
            gave_up,
            timeout=60,
            what=f"MLflow giving up the webhook of v{version}",
            seen=lambda: processes.tail(mlflow_server.log_file, 5),
        )
    finally:
        assert up(stack) == 0, (
            "mlops up could not restart the receiver and the Prefect server"
        )  # starts what is missing
    assert processes.http_ok(server.health_url) and processes.http_ok(receiver.health_url)
    assert flow_runs(prefect_client, CD_DEPLOYMENT, version=version) == [], "the webhook delivered after all"

    # `up` started a reconciliation too; it leaves a version younger than min_age_seconds (120 s) to
    # the webhook, but under load `up` itself can take that long, and then it is that run which
    # starts the delivery. The scheduled one (5 min) would find it later; the test starts one at once:
    # it starts the delivery, or finds the one `up`'s reconciliation started in flight.
    reconcile = UUID(start_reconciliation(stack.prefect_api_url, min_age_seconds=0))
    assert finished(stack, reconcile, "the reconciliation").state.is_completed()
    report = _artifact(prefect_client, reconcile, "delivery-reconciliation")
    assert f"v{version}" in report and ("**started**" in report or "in flight" in report), report

    cd = one_flow_run(prefect_client, CD_DEPLOYMENT, f"version {version}", version=version)
    assert "reconciled" in cd.tags
    state = finished(stack, cd.id, f"CD of the reconciled v{version}").state
    decision = mlflow_client.get_model_version(name, version).tags.get("deployment")
    assert decision in {"promoted", "rejected", "rolled_back"}, (
        f"CD {state.name}: {state.message}; deployment tag {decision!r}"
    )

    # Decided now: a reconciliation run later starts nothing for it.
    again = run_deployment(RECONCILE_DEPLOYMENT, parameters={"min_age_seconds": 0}, timeout=0)
    assert finished(stack, again.id, "the second reconciliation").state.is_completed()
    assert len(flow_runs(prefect_client, CD_DEPLOYMENT, version=version)) == 1
