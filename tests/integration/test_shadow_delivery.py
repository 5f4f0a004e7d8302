"""Shadow delivery in-process with the real parts (Terraform, the model service, locust): production serves the
champion with the candidate scoring its traffic unseen; the shadow gate promotes a candidate that answers like
the champion and rejects one that staging's gates let through but that disagrees with it on production traffic."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import date

import httpx
import numpy as np
import pytest
from mlflow.tracking import MlflowClient

from flows.continuous_delivery import continuous_delivery
from flows.continuous_training import continuous_training
from mlops.adapters import environments, sources
from mlops.config import Config, load_config
from tests.conftest import quick_delivery_config, write_config
from tests.integration.conftest import read_artifacts
from tests.integration.test_continuous_delivery import MODEL, _lineage, _served_version
from tests.integration.test_delivery_failures import _fit, _january_fitted_part, _register

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("prefect_backend")]

SHADOW = {"delivery.strategy": "shadow", "delivery.shadow_requests": 40, "delivery.shadow_seconds": 180}


@contextmanager
def production_traffic(config: Config) -> Iterator[None]:
    """Clients of production meanwhile: February rows, one per request, until the block ends (a request that
    meets the service restarting is simply lost, as a real client's would be)."""
    frame = sources.load_window(config, as_of="2013-03-01", months=1).frame.sample(400, random_state=2)
    columns = config.dataset.features
    rows = frame[columns].replace({np.nan: None}).values.tolist()
    stop = threading.Event()

    def send() -> None:
        url = f"http://127.0.0.1:{config.serving.production_port}/invocations"
        with httpx.Client(timeout=5) as client:
            i = 0
            while not stop.is_set():
                try:
                    client.post(url, json={"dataframe_split": {"columns": columns, "data": [rows[i % len(rows)]]}})
                except httpx.HTTPError:
                    stop.wait(0.2)
                i += 1

    thread = threading.Thread(target=send, daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(timeout=30)


def test_shadow_promotes_a_candidate_that_answers_like_the_champion_and_rejects_one_that_does_not(
    isolated, monkeypatch
) -> None:
    swap = quick_delivery_config(isolated)
    monkeypatch.setenv("MLOPS_CONFIG", str(swap))
    config = load_config(swap)
    try:
        assert continuous_training(as_of=date(2013, 2, 1), window_months=1)["version"] == "1"
        assert continuous_delivery(version="1")["status"] == "promoted"  # a first version: swapped in

        client = MlflowClient()
        first = client.get_model_version(MODEL, "1")
        copy = str(
            client.create_model_version(MODEL, first.source, run_id=first.run_id, tags=_lineage(first.tags)).version
        )
        monkeypatch.setenv("MLOPS_CONFIG", str(write_config(swap, isolated, SHADOW)))
        with production_traffic(config):
            state = continuous_delivery(version=copy, return_state=True)
        assert state.is_completed() and state.result()["status"] == "promoted", state
        gates = {g["name"]: g for g in state.result()["gates"]}
        assert gates["shadow rows"]["observed"] >= 40 and gates["shadow agreement"]["observed"] == 1.0
        assert "shadow agreement" in read_artifacts(state.state_details.flow_run_id)["cd-decision"]
        assert _served_version(config.serving.production_port) == copy

        # Trained on the opposite labels: staging's gates are opened for it (no floor, any loss allowed), so only
        # the shadow gate stands between it and production.
        train = _january_fitted_part(config)
        flipped = _fit(config, train.assign(arr_delayed=1 - train["arr_delayed"]), max_iter=30)
        example = train.head(200)[config.dataset.features]
        bad = _register(config, flipped, example, _lineage(first.tags))
        lenient = {**SHADOW, "gates.floors": {}, "gates.min_gain": -1.0, "gates.max_segment_drop": 1.0}
        monkeypatch.setenv("MLOPS_CONFIG", str(write_config(swap, isolated, lenient)))
        with production_traffic(config):
            state = continuous_delivery(version=bad, return_state=True)
        assert state.name == "Rejected", state
        reason = state.result()["reason"]
        assert (
            "shadow agreement" in reason
            and "staging back to v" in read_artifacts(state.state_details.flow_run_id)["cd-decision"]
        )
        assert str(client.get_model_version_by_alias(MODEL, "champion").version) == copy
        assert _served_version(config.serving.production_port) == copy  # the shadow is gone, the champion answers
        assert "shadow" not in httpx.get(f"http://127.0.0.1:{config.serving.production_port}/version").json()
    finally:
        for name in environments.NAMES:
            environments.destroy(config, name)
