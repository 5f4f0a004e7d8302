"""The registry adapter against a real MLflow store: one answer to "which version is champion"."""

from __future__ import annotations

import mlflow
import pytest
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient
from sklearn.dummy import DummyClassifier

from mlops.adapters import registry
from mlops.processes import free_port

pytestmark = pytest.mark.integration

NAME = "registry-test"


def _register(client: MlflowClient, count: int) -> None:
    mlflow.set_experiment("registry-test")
    for _ in range(count):
        with mlflow.start_run():
            info = mlflow.sklearn.log_model(DummyClassifier().fit([[0], [1]], [0, 1]), name="model")
        mlflow.register_model(info.model_uri, NAME)


def test_no_model_and_no_alias_are_a_typed_none_and_an_alias_is_a_version(isolated):
    client = MlflowClient()
    assert registry.champion(client, NAME) is None  # no such model
    _register(client, 1)
    assert registry.champion(client, NAME) is None  # a model, no alias yet
    assert registry.version(client, NAME, "7") is None
    client.set_registered_model_alias(NAME, registry.CHAMPION, "1")
    found = registry.champion(client, NAME)
    assert found is not None and found.version == "1" and found.uri == f"models:/{NAME}/1" and found.status == "READY"


def test_a_registry_that_does_not_answer_raises_instead_of_meaning_no_champion(monkeypatch):
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "2")
    down = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    with pytest.raises(MlflowException):
        registry.champion(MlflowClient(down, registry_uri=down), NAME)


def test_promotion_moves_champion_keeps_the_previous_and_clears_challenger(isolated):
    client = MlflowClient()
    _register(client, 2)
    client.set_registered_model_alias(NAME, registry.CHALLENGER, "1")
    assert registry.promote(client, NAME, "1") is None
    assert registry.champion(client, NAME).version == "1"
    assert registry.aliased(client, NAME, registry.CHALLENGER) is None  # v1 is delivered: no longer a challenger

    client.set_registered_model_alias(NAME, registry.CHALLENGER, "2")
    assert registry.promote(client, NAME, "2").version == "1"
    assert registry.champion(client, NAME).version == "2"
    assert registry.aliased(client, NAME, registry.PREVIOUS_CHAMPION).version == "1"
    assert registry.aliased(client, NAME, registry.CHALLENGER) is None

    registry.restore_champion(client, NAME, "1")  # the compensation CD's rollback runs
    assert registry.champion(client, NAME).version == "1"
    registry.restore_champion(client, NAME, None)
    assert registry.champion(client, NAME) is None


def test_an_experiment_on_a_local_database_keeps_its_artifacts_beside_it_not_in_the_working_directory(tmp_path):
    (tmp_path / "store").mkdir()
    client = MlflowClient(f"sqlite:///{tmp_path}/store/mlflow.db")
    made = registry.ensure_experiment(client, "beside")
    assert client.get_experiment(made).artifact_location == (tmp_path / "store" / "mlruns").as_uri()
    assert registry.ensure_experiment(client, "beside") == made  # found, not made twice
