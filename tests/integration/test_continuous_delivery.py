"""The CD flow in-process with the real parts: Terraform (embedded engine), the model service, locust."""

from __future__ import annotations

from datetime import date

import httpx
import pytest
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from flows.continuous_delivery import continuous_delivery
from flows.continuous_training import continuous_training
from mlops.adapters import environments, registry
from mlops.config import load_config
from tests.conftest import quick_delivery_config, write_config
from tests.integration.conftest import read_artifacts

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("prefect_backend")]

MODEL = "flights-delay"


@pytest.fixture
def delivery_config(isolated, monkeypatch):
    """January data, a short load test with SLOs this shared 2-core machine meets, free ports."""
    path = quick_delivery_config(isolated)
    monkeypatch.setenv("MLOPS_CONFIG", str(path))
    yield path
    config = load_config(path)
    for name in environments.NAMES:  # stops the services Terraform started
        environments.destroy(config, name)


def _lineage(tags: dict[str, str]) -> dict[str, str]:
    """A version's lineage tags without its delivery decision (a copy is a new, undecided version)."""
    return {k: v for k, v in tags.items() if not k.startswith("deployment") and k not in ("rejected", "rolled_back")}


def _served_version(port: int) -> str:
    return str(httpx.get(f"http://127.0.0.1:{port}/version", timeout=5).json()["model_version"])


def test_promotes_a_good_version_rejects_a_worse_one_and_rolls_back_a_failed_promotion(delivery_config, monkeypatch):
    config = load_config(delivery_config)
    assert continuous_training(as_of=date(2013, 2, 1), window_months=1)["version"] == "1"

    promoted = continuous_delivery(version="1")
    assert promoted["status"] == "promoted", promoted
    [watch] = [g for g in promoted["gates"] if g["name"] == "production watch"]
    assert watch["passed"] and watch["observed"] == 0.0 and "probes in 2 s, 0 failed" in watch["detail"], watch
    client = MlflowClient()
    assert str(client.get_model_version_by_alias(MODEL, "champion").version) == "1"
    assert client.get_model_version(MODEL, "1").tags["deployment"] == "promoted"
    delivery = client.get_model_version(MODEL, "1").description.split("## Delivery", 1)[1]
    assert "**promoted, serving at" in delivery and "Pending" not in delivery  # the model card's outcome
    assert _served_version(config.serving.production_port) == "1"
    run = client.get_run(client.get_model_version(MODEL, "1").run_id)
    assert run.data.metrics["load_rps"] > 0 and "load_p99_ms" in run.data.metrics

    assert continuous_delivery(version="1")["status"] == "noop"

    # A second version that the live gates refuse: floors no model reaches.
    client.create_model_version(
        MODEL,
        client.get_model_version(MODEL, "1").source,
        run_id=run.info.run_id,
        tags=_lineage(client.get_model_version(MODEL, "1").tags),
    )
    strict = write_config(delivery_config, delivery_config.parent, {"gates.floors": {"roc_auc": 0.99}})
    monkeypatch.setenv("MLOPS_CONFIG", str(strict))
    rejected = continuous_delivery(version="2")
    assert rejected["status"] == "rejected"
    assert "live performance" in rejected["reason"] and "floor roc_auc" in rejected["reason"]
    assert client.get_model_version(MODEL, "2").tags["deployment"] == "rejected"
    assert str(client.get_model_version_by_alias(MODEL, "champion").version) == "1"
    assert _served_version(config.serving.production_port) == "1"
    assert _served_version(config.serving.staging_port) == "1"  # staging rolled back to the champion

    # A third version passes every gate, then the alias move fails after the production apply: the
    # delivery transaction rolls back, so production never serves a version `champion` does not name.
    monkeypatch.setenv("MLOPS_CONFIG", str(delivery_config))
    client.create_model_version(
        MODEL,
        client.get_model_version(MODEL, "1").source,
        run_id=run.info.run_id,
        tags=_lineage(client.get_model_version(MODEL, "1").tags),
    )
    real_promote = registry.promote

    def promote_then_fail(mlflow_client, name, number):
        real_promote(mlflow_client, name, number)  # the alias moved...
        raise MlflowException("injected: the registry failed after moving the alias")  # ...then the call failed

    monkeypatch.setattr(registry, "promote", promote_then_fail)
    state = continuous_delivery(version="3", return_state=True)
    assert state.is_failed() and "injected" in str(state.message)
    assert str(client.get_model_version_by_alias(MODEL, "champion").version) == "1"
    assert _served_version(config.serving.production_port) == "1"
    assert _served_version(config.serving.staging_port) == "1"
    assert "rolled back" in read_artifacts(state.state_details.flow_run_id)["cd-decision"]


def test_a_model_no_use_case_registers_is_not_delivered_anywhere(isolated, monkeypatch):
    monkeypatch.setenv("MLOPS_CONFIG", str(quick_delivery_config(isolated)))
    result = continuous_delivery(version="1", model_name="nobody-registers-this")  # no server needed to say no
    assert result["status"] == "skipped"
    # A use case named with another use case's model: not delivered into the wrong environments either.
    mismatched = continuous_delivery(version="1", model_name="flights-delay", use_case="diabetes")
    assert mismatched["status"] == "skipped"
