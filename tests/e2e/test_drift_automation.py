"""Drift → retrain → deliver through the automations alone, on the real stack; no drift starts nothing."""

from __future__ import annotations

import time

import pytest
from mlflow.tracking import MlflowClient

from mlops.config import load_config
from tests.e2e.conftest import CD_DEPLOYMENT, CT_DEPLOYMENT, flow_runs, one_flow_run

pytestmark = pytest.mark.e2e

CT, CD, DRIFT = CT_DEPLOYMENT, CD_DEPLOYMENT, "drift-monitoring/scheduled"


def _stays_empty(query, seconds: float) -> bool:
    """True when `query()` stays empty for `seconds` (an automation that should not fire, given time to)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if query():
            return False
        time.sleep(0.5)
    return True


def test_no_drift_starts_nothing_and_a_burst_of_drift_retrains_once_then_delivers(
    stack, prefect_client, wait_for_flow_run, champion
):
    from prefect.deployments import run_deployment

    client = MlflowClient(stack.mlflow_uri)
    name = load_config().tracking.model_name
    reference_window = client.get_model_version(name, champion).tags["data_window"]
    reference_end = reference_window.split("..")[1]

    # The champion's own training window, checked again: no drift, no retraining.
    calm = run_deployment(DRIFT, parameters={"as_of": reference_end, "window_months": 1}, timeout=0)
    assert wait_for_flow_run(calm.id, timeout=180).is_completed()
    assert _stays_empty(lambda: flow_runs(prefect_client, CT, reason="drift"), seconds=15)

    # Summer arrives, checked twice in a burst: two drift events, one retraining.
    burst = [run_deployment(DRIFT, parameters={"as_of": "2013-08-01", "window_months": 1}, timeout=0) for _ in range(2)]
    for run in burst:
        assert wait_for_flow_run(run.id, timeout=240).is_completed()
    retrain = one_flow_run(prefect_client, CT, "the drift event", timeout=60, reason="drift")
    assert str(retrain.parameters["as_of"]) == "2013-08-01"
    assert wait_for_flow_run(retrain.id, timeout=300).is_completed()
    assert len(flow_runs(prefect_client, CT, reason="drift")) == 1, "a burst of drift events must start one CT run"

    [version] = client.search_model_versions(f"name = '{name}' and tags.prefect_flow_run_id = '{retrain.id}'")
    assert version.tags["trigger_reason"] == "drift" and version.tags["data_window"].endswith("2013-08-01")
    cd = one_flow_run(
        prefect_client,
        CD,
        "the retrained version",
        version=version.version,
        where=lambda run: run.created > retrain.created,
    )  # not an earlier test's run of that number
    state = wait_for_flow_run(cd.id, timeout=300)
    assert state.name == "Completed", state
    assert str(client.get_model_version_by_alias(name, "champion").version) == str(version.version)
