"""Registration → automation → CD, on the real stack: Prefect server, worker, MLflow server, webhook receiver."""

from __future__ import annotations

import mlflow
import pytest
from sklearn.dummy import DummyClassifier

from mlops.adapters import model_files, sources
from mlops.config import load_config
from mlops.domain import modeling
from tests.e2e.conftest import CD_DEPLOYMENT, finished, one_flow_run, served_version

pytestmark = pytest.mark.e2e


def test_a_version_registered_by_ct_is_delivered_by_the_automation(delivered, mlflow_client):
    """The session's loop: the registration's webhook → mlops.model.registered → this CD run → production."""
    version, cd = delivered.version, delivered.cd
    registered_at = (
        mlflow_client.get_model_version(load_config().tracking.model_name, version).creation_timestamp / 1000
    )
    print(f"registration → CD flow run start: {cd.start_time.timestamp() - registered_at:.1f} s")
    assert str(cd.parameters["version"]) == version and cd.state.name == "Completed", cd.state
    assert cd.created.timestamp() >= registered_at  # started by the registration, not before it
    assert (delivered.champion, delivered.served) == (version, version), "CD promoted it and production served it"


def test_a_version_registered_by_hand_fires_cd_and_a_bad_one_is_rejected(
    stack, prefect_client, mlflow_client, champion, notification_receiver
):
    """A notebook user logs a useless model and registers it: CD runs, rejects it, production keeps the champion,
    and the webhook gets one message saying so."""
    config = load_config()
    name = config.tracking.model_name

    january = sources.load_window(config, as_of="2013-02-01", months=1).frame
    X, y = modeling.features_and_target(january, config)
    useless = modeling.assemble_model(modeling.build_preprocessor(config).fit(X), DummyClassifier(strategy="prior"))
    useless.fit(X, y)
    mlflow.set_experiment("notebook")
    with mlflow.start_run():
        model_uri = model_files.log_model(useless, X.head(200), useless.predict_proba(X.head(200)), config)
    version = mlflow.register_model(model_uri, name)  # by hand: no lineage tags, no CT

    cd = one_flow_run(prefect_client, CD_DEPLOYMENT, f"version {version.version}", version=version.version)
    state = finished(stack, cd.id, f"CD of the useless v{version.version}").state
    assert state.name == "Rejected", state
    tags = mlflow_client.get_model_version(name, version.version).tags
    assert tags["deployment"] == "rejected" and "floor roc_auc" in tags["rejected"]
    assert str(mlflow_client.get_model_version_by_alias(name, "champion").version) == champion
    assert served_version(config.serving.production_port) == champion
    assert served_version(config.serving.staging_port) == champion

    # The notify-cd-rejected automation (applied by `mlops up`): one Slack-style message with the reason and links.
    about = f"CD rejected {name} v{version.version}"
    [text] = notification_receiver.wait_for(about)
    assert "floor roc_auc" in text and f"/#/models/{name}/versions/{version.version}" in text, text
    assert f"/runs/flow-run/{cd.id}" in text, text
    assert len(notification_receiver.texts(about)) == 1
