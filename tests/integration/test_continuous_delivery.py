"""The CD flow in-process with the real parts: Terraform (embedded engine), the model service, locust."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from datetime import date

import httpx
import numpy as np
import pytest
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from flows.continuous_delivery import continuous_delivery
from flows.continuous_training import continuous_training
from mlops.adapters import environments, registry, sources
from mlops.config import Config, load_config
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


SHADOW = {"delivery.strategy": "shadow", "delivery.shadow_requests": 40, "delivery.shadow_seconds": 180}


@contextmanager
def production_traffic(config: Config) -> Iterator[None]:
    """Clients of production meanwhile: February rows, one per request, about 50 a second, until the block ends
    (a request that meets the service restarting is simply lost, as a real client's would be)."""
    frame = sources.load_window(config, as_of="2013-03-01", months=1).frame.sample(400, random_state=2)
    columns = config.dataset.features
    rows = frame[columns].replace({np.nan: None}).values.tolist()
    stop = threading.Event()

    def send() -> None:
        url = f"http://127.0.0.1:{config.serving.production_port}/invocations"
        with httpx.Client(timeout=5) as client:
            i = 0
            while not stop.is_set():
                with suppress(httpx.HTTPError):
                    client.post(url, json={"dataframe_split": {"columns": columns, "data": [rows[i % len(rows)]]}})
                i += 1
                stop.wait(0.02)  # ≈ 50 requests/s: production traffic, not a load test on the suite's 2 cores

    thread = threading.Thread(target=send, daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(timeout=30)


def test_promotes_a_good_version_rolls_back_a_failed_promotion_and_judges_shadows(delivery_config, monkeypatch):
    # A version the live gates refuse is rejected in test_delivery_failures.py (five ways) and on the stack
    # (e2e test_delivery_automation.py): not again here.
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

    # A second version passes every gate, then the alias move fails after the production apply: the
    # delivery transaction rolls back, so production never serves a version `champion` does not name.
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
    state = continuous_delivery(version="2", return_state=True)
    assert state.is_failed() and "injected" in str(state.message)
    assert str(client.get_model_version_by_alias(MODEL, "champion").version) == "1"
    assert _served_version(config.serving.production_port) == "1"
    assert _served_version(config.serving.staging_port) == "1"
    assert "rolled back" in read_artifacts(state.state_details.flow_run_id)["cd-decision"]
    monkeypatch.setattr(registry, "promote", real_promote)

    # delivery.strategy: shadow. Production first serves the champion with the candidate scoring its traffic
    # unseen; a copy of the champion answers alike and is promoted.
    first = client.get_model_version(MODEL, "1")
    copy = str(client.create_model_version(MODEL, first.source, run_id=first.run_id, tags=_lineage(first.tags)).version)
    monkeypatch.setenv("MLOPS_CONFIG", str(write_config(delivery_config, delivery_config.parent, SHADOW)))
    with production_traffic(config):
        state = continuous_delivery(version=copy, return_state=True)
    assert state.is_completed() and state.result()["status"] == "promoted", state
    gates = {g["name"]: g for g in state.result()["gates"]}
    assert gates["shadow rows"]["observed"] >= 40 and gates["shadow agreement"]["observed"] == 1.0, gates
    assert "shadow agreement" in read_artifacts(state.state_details.flow_run_id)["cd-decision"]
    assert _served_version(config.serving.production_port) == copy

    # Trained on the opposite labels: staging's gates are opened for it (no floor, any loss allowed), so only
    # the shadow gate stands between it and production, and rejects it.
    from tests.integration.test_delivery_failures import _fit, _january_fitted_part, _register  # it imports this module

    train = _january_fitted_part(config)
    flipped = _fit(config, train.assign(arr_delayed=1 - train["arr_delayed"]), max_iter=30)
    bad = _register(config, flipped, train.head(200)[config.dataset.features], _lineage(first.tags))
    lenient = {**SHADOW, "gates.floors": {}, "gates.min_gain": -1.0, "gates.max_segment_drop": 1.0}
    monkeypatch.setenv("MLOPS_CONFIG", str(write_config(delivery_config, delivery_config.parent, lenient)))
    with production_traffic(config):
        state = continuous_delivery(version=bad, return_state=True)
    assert state.name == "Rejected", state
    assert "shadow agreement" in state.result()["reason"], state.result()["reason"]
    assert f"staging back to v{copy}" in read_artifacts(state.state_details.flow_run_id)["cd-decision"]
    assert str(client.get_model_version_by_alias(MODEL, "champion").version) == copy
    served = httpx.get(f"http://127.0.0.1:{config.serving.production_port}/version", timeout=5).json()
    assert served["model_version"] == copy and "shadow" not in served  # the champion alone again


def test_a_model_no_use_case_registers_is_not_delivered_anywhere(isolated, monkeypatch):
    monkeypatch.setenv("MLOPS_CONFIG", str(quick_delivery_config(isolated)))
    result = continuous_delivery(version="1", model_name="nobody-registers-this")  # no server needed to say no
    assert result["status"] == "skipped"
    # A use case named with another use case's model: not delivered into the wrong environments either.
    mismatched = continuous_delivery(version="1", model_name="flights-delay", use_case="diabetes")
    assert mismatched["status"] == "skipped"
