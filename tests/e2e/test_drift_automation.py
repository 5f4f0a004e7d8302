"""Drift → retrain → deliver through the automations alone, on the real stack; no drift starts nothing."""

from __future__ import annotations

import pytest
from mlflow.tracking import MlflowClient

from mlops import waiting
from mlops.config import load_config
from tests.e2e.conftest import CD_DEPLOYMENT, CT_DEPLOYMENT, DRIFT_DEPLOYMENT, finished, flow_runs, one_flow_run

pytestmark = pytest.mark.e2e

DRIFT_EVENT = "mlops.drift.detected"


def _drift_events_of(prefect_client, flow_run_id) -> list:
    """The drift events a drift-monitoring run emitted (Prefect relates an event to the run that emitted it)."""
    from prefect.events.filters import EventFilter, EventNameFilter, EventRelatedFilter

    related = EventRelatedFilter(id=[f"prefect.flow-run.{flow_run_id}"])
    page = prefect_client.read_events(
        filter=EventFilter(event=EventNameFilter(name=[DRIFT_EVENT]), related=related), limit=50
    )
    return page.events


def test_no_drift_starts_nothing_and_a_burst_of_drift_retrains_once_then_delivers(stack, prefect_client, champion):
    from prefect.deployments import run_deployment

    client = MlflowClient(stack.mlflow_uri)
    name = load_config().tracking.model_name
    reference_end = client.get_model_version(name, champion).tags["data_window"].split("..")[1]
    drift_runs_before = {r.id for r in flow_runs(prefect_client, CT_DEPLOYMENT, reason="drift")}

    # The champion's own training window checked again (no drift), and summer checked twice in a
    # burst (two drift events, one retraining), all three at once.
    calm = run_deployment(DRIFT_DEPLOYMENT, parameters={"as_of": reference_end, "window_months": 1}, timeout=0)
    burst = [
        run_deployment(DRIFT_DEPLOYMENT, parameters={"as_of": "2013-08-01", "window_months": 1}, timeout=0)
        for _ in range(2)
    ]
    calm = finished(stack, calm.id, "the calm drift check")
    assert calm.state.is_completed(), calm.state
    for run in burst:
        assert finished(stack, run.id, "a drift check of July").state.is_completed()
        emitted = waiting.wait_for(
            lambda run=run: _drift_events_of(prefect_client, run.id),
            timeout=30,
            what=f"the drift event of {run.id} on the server",
        )
        assert len(emitted) == 1, emitted

    def new(run) -> bool:
        return run.id not in drift_runs_before

    retrain = one_flow_run(prefect_client, CT_DEPLOYMENT, "the drift event", timeout=60, where=new, reason="drift")
    assert str(retrain.parameters["as_of"]) == "2013-08-01"
    assert finished(stack, retrain.id, "the retraining on drift").state.is_completed()
    # By now every event above has long been persisted and evaluated: the calm check emitted none, and
    # the second of the burst was absorbed by the trigger's debounce window.
    assert _drift_events_of(prefect_client, calm.id) == [], "the calm check emitted a drift event"
    assert len(flow_runs(prefect_client, CT_DEPLOYMENT, where=new, reason="drift")) == 1, "a burst must retrain once"

    [version] = client.search_model_versions(f"name = '{name}' and tags.prefect_flow_run_id = '{retrain.id}'")
    assert version.tags["trigger_reason"] == "drift" and version.tags["data_window"].endswith("2013-08-01")
    cd = one_flow_run(
        prefect_client,
        CD_DEPLOYMENT,
        "the retrained version",
        version=version.version,
        where=lambda run: run.created > retrain.created,
    )
    state = finished(stack, cd.id, f"CD of the retrained v{version.version}").state
    assert state.name == "Completed", state
    assert str(client.get_model_version_by_alias(name, "champion").version) == str(version.version)
