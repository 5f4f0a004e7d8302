"""Deliveries at once: one decision per version, one delivery at a time per environment (in-process too)."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from datetime import date

import pytest
from mlflow.tracking import MlflowClient

from flows.continuous_delivery import continuous_delivery
from flows.continuous_training import continuous_training
from tests.integration.test_continuous_delivery import MODEL, delivery_config  # noqa: F401 - the fixture

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("prefect_backend")]


def test_two_deliveries_of_one_version_at_once_decide_once(delivery_config):  # noqa: F811
    assert continuous_training(as_of=date(2013, 2, 1), window_months=1)["version"] == "1"

    with ThreadPoolExecutor(max_workers=2) as pool:
        states = list(pool.map(lambda _: continuous_delivery(version="1", return_state=True), range(2)))

    outcomes = sorted(s.result()["status"] for s in states)
    assert outcomes == ["noop", "promoted"], outcomes
    promoted, noop = sorted(states, key=lambda s: s.result()["status"] != "promoted")
    assert str(MlflowClient().get_model_version_by_alias(MODEL, "champion").version) == "1"
    # Serialised: the no-op waited for the promotion to end before it looked (it holds the same locks).
    assert noop.timestamp >= promoted.timestamp
