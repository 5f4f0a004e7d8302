"""The reconciliation in-process: real Prefect runs of a real CD deployment (no worker: they stay in flight), MLflow on SQLite."""

from __future__ import annotations

from uuid import uuid4

import pytest
from mlflow.tracking import MlflowClient
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterId
from prefect.states import Cancelled, Failed

from flows.continuous_delivery import continuous_delivery
from flows.reconciliation import delivery_reconciliation
from mlops.adapters import listings, registry
from tasks.reconciliation import CD_DEPLOYMENT, start_delivery
from tests.integration.conftest import read_artifacts

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("prefect_backend")]


@pytest.fixture
def cd_deployment() -> None:
    """`continuous-delivery/deploy-model` in the harness, with no work pool: nothing runs its flow runs, so they stay Scheduled."""
    continuous_delivery.to_deployment(name="deploy-model").apply()


def _register(name: str, count: int) -> None:
    """`count` new READY versions; the reconciliation never loads them, so a plain source path does (no log_model: 13 s each)."""
    client = MlflowClient()
    if not client.search_registered_models(f"name = '{name}'"):
        client.create_registered_model(name)
    for _ in range(count):
        client.create_model_version(name, source="file:///nowhere/model")


def _cd_runs(name: str, version: str) -> list:
    with get_client(sync_client=True) as client:
        deployment = client.read_deployment_by_name(CD_DEPLOYMENT)
        runs = client.read_flow_runs(deployment_filter=DeploymentFilter(id=DeploymentFilterId(any_=[deployment.id])))
    return [r for r in runs if r.parameters.get("model_name") == name and str(r.parameters.get("version")) == version]


def _end(run_id, state) -> None:
    with get_client(sync_client=True) as client:
        client.set_flow_run_state(run_id, state, force=True)


def test_lost_versions_get_one_cd_run_each_and_none_while_it_is_in_flight(isolated, cd_deployment):
    name = f"lost-{uuid4().hex[:8]}"
    client = MlflowClient()
    assert listings.undelivered_versions(client, name) == []  # no such model yet
    _register(name, 5)
    client.set_model_version_tag(name, "2", "deployment", "promoted")
    client.set_registered_model_alias(name, registry.CHAMPION, "2")
    client.set_model_version_tag(name, "3", "deployment", "rejected")
    assert [r.ref.version for r in listings.undelivered_versions(client, name)] == ["1", "4", "5"]  # oldest first

    state = delivery_reconciliation(model_name=name, min_age_seconds=0, return_state=True)
    first = state.result()
    assert set(first["started"]) == {"4", "5"} and first["skipped"] == {"1": "superseded"}, first
    [run] = _cd_runs(name, "4")
    assert str(run.id) == first["started"]["4"] and run.state.is_scheduled()
    assert run.parameters == {"version": "4", "model_name": name} and "reconciled" in run.tags
    report = read_artifacts(state.state_details.flow_run_id)["delivery-reconciliation"]
    assert "champion v2" in report and "**started**" in report and "older than champion v2" in report

    # The CD runs have not run yet (no worker): a second reconciliation starts nothing more.
    second = delivery_reconciliation(model_name=name, min_age_seconds=0)
    assert second["started"] == {} and second["skipped"] == {"1": "superseded", "4": "in flight", "5": "in flight"}, (
        second
    )
    assert len(_cd_runs(name, "4")) == len(_cd_runs(name, "5")) == 1


def test_a_failed_delivery_is_retried_up_to_max_attempts_a_cancelled_one_is_left_alone_a_new_one_waits(
    isolated, cd_deployment
):
    name = f"retry-{uuid4().hex[:8]}"
    _register(name, 2)
    first = delivery_reconciliation(model_name=name, min_age_seconds=0)
    assert set(first["started"]) == {"1", "2"}, first
    _end(first["started"]["1"], Failed(message="injected: the worker died"))
    _end(first["started"]["2"], Cancelled(message="a person stopped it"))

    second = delivery_reconciliation(model_name=name, min_age_seconds=0, max_attempts=2)
    assert set(second["started"]) == {"1"} and second["skipped"] == {"2": "held"}, second
    assert second["started"]["1"] != first["started"]["1"] and len(_cd_runs(name, "1")) == 2
    _end(second["started"]["1"], Failed(message="injected again"))

    third = delivery_reconciliation(model_name=name, min_age_seconds=0, max_attempts=2)
    assert third["started"] == {} and third["skipped"] == {"1": "gave up", "2": "held"}, third

    _register(name, 1)  # just registered: the webhook's CD run may still be on its way
    fourth = delivery_reconciliation(model_name=name)
    assert fourth["skipped"]["3"] == "too recent" and "3" not in fourth["started"], fourth
    assert _cd_runs(name, "3") == []

    # A start is idempotent per (model, version, attempt): a retried task or a concurrent reconciliation starts one run.
    assert start_delivery.fn(name, "3", 1) == start_delivery.fn(name, "3", 1)
    assert len(_cd_runs(name, "3")) == 1
