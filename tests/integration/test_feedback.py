"""Late labels in-process: the champion served by the service's own app (capture on), labels ingested by the feedback
flow against a temporary MLflow store; a bad batch changes nothing, a batch showing a worse model emits the event."""

from __future__ import annotations

import asyncio
from datetime import date
from pathlib import Path

import httpx
import numpy as np
import pandas as pd
import pytest
from mlflow.tracking import MlflowClient
from sklearn.metrics import roc_auc_score

from flows.continuous_training import continuous_training
from flows.feedback import feedback
from mlops.config import DEFAULT_CONFIG, REQUEST_ID, load_config
from mlops.serving.capture import Capture, CaptureSpec, read_captured
from mlops.serving.model import load_served_model
from mlops.serving.server import create_app
from tests.integration.conftest import read_artifacts

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("prefect_backend")]
ROWS = 600


def serve_in_process(config, version: str, frame: pd.DataFrame) -> list[float]:
    """Each row of `frame` sent as one request (id f"req-<i>") to the service's app over the champion, capture on;
    leaving the app's lifespan writes the capture. Returns the positive class's probability per row."""
    model = load_served_model(f"models:/{config.tracking.model_name}/{version}")
    spec = CaptureSpec(str(config.capture_dir), config.name, "production", version, flush_seconds=3600)
    app = create_app(
        model,
        max_batch_size=64,
        max_wait_ms=0,
        max_body_bytes=1 << 20,
        capture=Capture(spec),
    )
    columns = list(
        dict.fromkeys([*config.dataset.features, *config.dataset.key_columns])
    )  # keys that are features once
    records = frame[columns].astype({config.dataset.time_column: str}).replace({np.nan: None})

    async def go() -> list[float]:
        async with app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://production") as client:
                answers = [
                    await client.post(
                        "/invocations",
                        json={"dataframe_split": {"columns": columns, "data": [list(row)]}},
                        headers={"X-Request-ID": f"req-{i}"},
                    )
                    for i, row in enumerate(records.itertuples(index=False))
                ]
        refused = [a.json() for a in answers if a.status_code != 200]
        assert not refused, refused[:3]
        return [a.json()["predictions"][0][1] for a in answers]

    return asyncio.run(go())


def test_labels_join_captured_traffic_measure_it_and_a_worse_batch_fires_retraining(
    isolated: Path, monkeypatch: pytest.MonkeyPatch, flights_month: pd.DataFrame
) -> None:
    monkeypatch.setenv("MLOPS_CONFIG", str(DEFAULT_CONFIG))
    config = load_config()
    version = continuous_training(as_of=date(2013, 2, 1), window_months=1)["version"]
    MlflowClient().set_registered_model_alias(config.tracking.model_name, "champion", version)
    traffic = flights_month.sample(ROWS, random_state=1).reset_index(drop=True)
    served = serve_in_process(config, version, traffic)
    assert len(read_captured(config.capture_dir, config.name)) == ROWS

    truth = traffic["arr_delayed"].astype(int)
    ids = [f"req-{i}" for i in range(ROWS)]
    good = pd.DataFrame({REQUEST_ID: ids[:200], "arr_delayed": truth[:200]})
    bad = pd.DataFrame(
        {REQUEST_ID: ["req-0", "no-such-request", "req-300", "req-300", "req-301"], "arr_delayed": [1, 0, 1, 0, "yes"]}
    )
    first = isolated / "labels-1.csv"
    pd.concat([good, bad.iloc[1:]]).to_csv(first, index=False)
    state = feedback(path=str(first), return_state=True)
    result = state.result()
    assert (result["received"], result["accepted"]) == (204, 200)
    assert {p["reason"]: p["rows"] for p in result["problems"]} == {
        "'arr_delayed' is not one of the model's classes [0, 1]": 1,
        "the same request twice in this batch": 2,
        "no captured request has this id": 1,
    }
    production = result["realized"][0]
    assert (production["environment"], production["version"], production["rows"]) == ("production", version, 200)
    assert production["realized"] == pytest.approx(roc_auc_score(truth[:200], served[:200]), abs=1e-9)
    if result["estimable"][version] == "yes":  # CBPE next to the realized metric
        assert abs(production["estimated"] - production["realized"]) < 0.1
    else:
        assert production["estimated"] is None and "calibration error" in result["estimable"][version]
    assert result["event"] is None  # the champion is well above its floor
    artifacts = read_artifacts(state.state_details.flow_run_id)
    assert "200 kept" in artifacts["feedback-summary"] and "realized-performance" in artifacts
    run = MlflowClient().get_run(result["mlflow_run_id"])
    assert run.data.metrics[f"realized.production.v{version}.roc_auc"] == pytest.approx(production["realized"])

    # Nothing kept changes: the same ids again are left out; labels that the model got wrong on 400 more rows
    # pull the champion's realized AUC under its floor (0.6) and emit mlops.performance.degraded.
    kept_first = sorted((config.state_dir / "labels" / config.name).glob("batch-*.parquet"))
    before = [f.read_bytes() for f in kept_first]
    worse = pd.DataFrame({REQUEST_ID: ids, "arr_delayed": np.where(np.array(served) >= 0.5, 0, 1)})
    second = isolated / "labels-2.csv"
    worse.iloc[150:].to_csv(second, index=False)  # 50 already labelled, 400 new and wrong
    result = feedback(path=str(second))
    assert (result["received"], result["accepted"]) == (450, 400)
    assert {p["reason"]: p["rows"] for p in result["problems"]} == {
        "already ingested (the label kept before is left as it was)": 50
    }
    assert [f.read_bytes() for f in kept_first] == before
    event = result["event"]
    assert event is not None and event["version"] == version and event["rows"] == 600
    assert event["realized"] < event["floor"] == 0.6 and event["use_case"] == "flights"


def test_labels_without_a_way_to_join_fail_the_run_naming_the_columns(isolated: Path, monkeypatch) -> None:
    monkeypatch.setenv("MLOPS_CONFIG", str(DEFAULT_CONFIG))
    path = isolated / "labels.csv"
    pd.DataFrame({"carrier": ["AA"], "arr_delayed": [1]}).to_csv(path, index=False)
    state = feedback(path=str(path), return_state=True)
    assert state.is_failed()
    assert "dataset.key_columns" in state.message or "key columns" in str(state.result(raise_on_failure=False))
