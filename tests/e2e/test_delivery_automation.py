"""Registration → automation → CD, on the real stack: Prefect server, worker, MLflow server, webhook receiver."""

from __future__ import annotations

import time
from collections.abc import Iterator

import httpx
import mlflow
import pytest
from mlflow.tracking import MlflowClient
from sklearn.dummy import DummyClassifier

from mlops import data, modeling, registry
from mlops.config import load_config

pytestmark = pytest.mark.e2e

CD_DEPLOYMENT = "continuous-delivery/deploy-model"


@pytest.fixture
def mlflow_client(stack) -> Iterator[MlflowClient]:
    mlflow.set_tracking_uri(stack.mlflow_uri)
    yield MlflowClient(stack.mlflow_uri, registry_uri=stack.mlflow_uri)
    mlflow.set_tracking_uri(None)  # process-wide in MLflow (and it sets MLFLOW_TRACKING_URI): undo it


def _cd_run_for(prefect_client, version: str, timeout: float = 120.0):
    """The CD flow run the automation created for `version` (polled: the event arrives asynchronously)."""
    from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterId

    deployment = prefect_client.read_deployment_by_name(CD_DEPLOYMENT)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        runs = prefect_client.read_flow_runs(deployment_filter=DeploymentFilter(id=DeploymentFilterId(any_=[deployment.id])))
        mine = [r for r in runs if str(r.parameters.get("version")) == version]
        if mine:
            assert len(mine) == 1, f"{len(mine)} CD runs for version {version}: every registration fires exactly one"
            return mine[0]
        time.sleep(0.5)
    pytest.fail(f"no {CD_DEPLOYMENT} run for version {version} within {timeout:.0f} s")


def _served_version(port: int) -> str:
    return str(httpx.get(f"http://127.0.0.1:{port}/version", timeout=5).json()["model_version"])


def test_a_version_registered_by_ct_is_delivered_by_the_automation(stack, prefect_client, wait_for_flow_run, mlflow_client):
    from prefect.deployments import run_deployment

    config = load_config()
    ct = run_deployment("continuous-training/retrain", parameters={"reason": "e2e"}, timeout=0)
    assert wait_for_flow_run(ct.id, timeout=300).is_completed()
    [version] = mlflow_client.search_model_versions(f"name = '{config.tracking.model_name}' and tags.prefect_flow_run_id = '{ct.id}'")

    registered_at = version.creation_timestamp / 1000
    cd = _cd_run_for(prefect_client, str(version.version))
    state = wait_for_flow_run(cd.id, timeout=300)
    cd = prefect_client.read_flow_run(cd.id)
    print(f"registration → CD flow run start: {cd.start_time.timestamp() - registered_at:.1f} s")
    assert state.is_completed() and state.name == "Completed", state
    assert str(mlflow_client.get_model_version_by_alias(config.tracking.model_name, "champion").version) == str(version.version)
    assert _served_version(config.serving.production_port) == str(version.version)


def test_a_version_registered_by_hand_fires_cd_and_a_bad_one_is_rejected(stack, prefect_client, wait_for_flow_run, mlflow_client):
    """A notebook user logs a useless model and registers it: CD runs, rejects it, production keeps the champion."""
    config = load_config()
    name = config.tracking.model_name
    champion = str(mlflow_client.get_model_version_by_alias(name, "champion").version)

    full = data.load_source(config)
    january = data.cut_window(full, "time_hour", data.window_bounds(full, "time_hour", "2013-02-01", 1))
    X, y = modeling.features_and_target(january, config)
    useless = modeling.assemble_model(modeling.build_preprocessor(config).fit(X), DummyClassifier(strategy="prior"))
    useless.fit(X, y)
    mlflow.set_experiment("notebook")
    with mlflow.start_run() as run:
        model_uri = registry.log_model(useless, X.head(200), useless.predict_proba(X.head(200)), config)
    version = mlflow.register_model(model_uri, name)  # by hand: no lineage tags, no CT

    cd = _cd_run_for(prefect_client, str(version.version))
    state = wait_for_flow_run(cd.id, timeout=300)
    assert state.name == "Rejected", state
    tags = mlflow_client.get_model_version(name, version.version).tags
    assert tags["deployment"] == "rejected" and "floor roc_auc" in tags["rejected"]
    assert str(mlflow_client.get_model_version_by_alias(name, "champion").version) == champion
    assert _served_version(config.serving.production_port) == champion
    assert _served_version(config.serving.staging_port) == champion
