"""What production saw, on the real stack: production captures the traffic it answers, `mlops labels` measures it,
and a batch of labels showing a worse model starts retraining through the automation."""

from __future__ import annotations

import os
import shlex
import subprocess
import uuid
from pathlib import Path

import httpx
import numpy as np
import pandas as pd
import pytest
from mlflow.tracking import MlflowClient

from mlops import waiting
from mlops.adapters import sources
from mlops.config import PROJECT_ROOT, REQUEST_ID, load_config
from mlops.serving.capture import read_captured
from tests.e2e.conftest import CT_DEPLOYMENT, RUN_TIMEOUT_S, flow_run_artifacts, flow_runs, one_flow_run

pytestmark = pytest.mark.e2e

FEEDBACK_DEPLOYMENT = "feedback/ingest"
ROWS = 240


def _labels(stack, path: Path, ids: list[str], labels: np.ndarray) -> subprocess.CompletedProcess[str]:
    """`mlops labels PATH` as a user runs it: from a shell that sourced the stack's env file."""
    pd.DataFrame({REQUEST_ID: ids, "arr_delayed": labels}).to_csv(path, index=False)
    shell = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "MLFLOW_", "MLOPS_STATE"))}
    command = f"source {shlex.quote(str(stack.env_file))} && mlops labels {shlex.quote(str(path))}"
    return subprocess.run(
        ["bash", "-c", command], cwd=PROJECT_ROOT, env=shell, capture_output=True, text=True, timeout=RUN_TIMEOUT_S
    )


def test_production_traffic_is_captured_labels_measure_it_and_a_worse_batch_retrains(
    stack, prefect_client, champion, tmp_path
) -> None:
    from prefect.states import Cancelled

    config = load_config()
    frame = sources.load_window(config, as_of=config.window.as_of, months=1).frame.sample(ROWS, random_state=5)
    columns = list(dict.fromkeys([*config.dataset.features, *config.dataset.key_columns]))
    rows = frame[columns].astype({config.dataset.time_column: str}).replace({np.nan: None})
    session = uuid.uuid4().hex[:8]
    ids = [f"e2e-{session}-{i}" for i in range(ROWS)]
    url = f"http://127.0.0.1:{config.serving.production_port}/invocations"
    with httpx.Client(timeout=10) as client:
        answers = [
            client.post(
                url, json={"dataframe_split": {"columns": columns, "data": [list(row)]}}, headers={"X-Request-ID": i}
            )
            for i, row in zip(ids, rows.itertuples(index=False), strict=True)
        ]
    assert all(a.status_code == 200 and a.headers["x-request-id"] == i for a, i in zip(answers, ids, strict=True))
    positive = np.array([a.json()["predictions"][0][1] for a in answers])

    # Written off the answers' path within serving.capture.flush_seconds.
    def ours() -> tuple[pd.DataFrame] | None:  # in a tuple: a frame has no truth value
        found = read_captured(stack.state_dir / "capture", config.name, environment="production")
        found = found[found[REQUEST_ID].isin(ids)]
        return (found,) if len(found) == ROWS else None

    [captured] = waiting.wait_for(ours, timeout=60, what=f"{ROWS} requests captured by production")
    assert set(captured["version"]) == {champion}
    assert np.allclose(captured.set_index(REQUEST_ID).loc[ids, "prediction"].map(lambda p: p[1]), positive)

    # The true labels of half the traffic: measured, nothing fires.
    truth = frame["arr_delayed"].astype(int).to_numpy()
    done = _labels(stack, tmp_path / "true.csv", ids[: ROWS // 2], truth[: ROWS // 2])
    assert done.returncode == 0 and "Completed" in done.stdout, done.stdout + done.stderr
    [run] = flow_runs(prefect_client, FEEDBACK_DEPLOYMENT, where=lambda r: str(tmp_path) in str(r.parameters))
    artifacts = flow_run_artifacts(prefect_client, run.id)
    assert f"**{ROWS // 2} kept**" in artifacts["feedback-summary"] and "Degraded" not in artifacts["feedback-summary"]
    assert f'"version": "{champion}"' in artifacts["realized-performance"]
    monitoring = MlflowClient(stack.mlflow_uri).search_runs(
        [
            MlflowClient(stack.mlflow_uri)
            .get_experiment_by_name(f"{config.tracking.experiment}-monitoring")
            .experiment_id
        ],
        filter_string="tags.labels_batch != ''",
        order_by=["attributes.start_time DESC"],
        max_results=1,
    )[0]
    realized = monitoring.data.metrics[f"realized.production.v{champion}.{config.gates.metric}"]
    assert realized > config.gates.floors[config.gates.metric]
    estimated = monitoring.data.metrics[f"estimated.production.v{champion}.{config.gates.metric}"]  # CBPE beside it
    assert 0.5 < estimated < 1

    # The other half labelled with the opposite of what production answered: the champion's realized metric
    # falls under its floor, the event fires, and the automation starts CT for this use case.
    done = _labels(stack, tmp_path / "worse.csv", ids[ROWS // 2 :], (positive[ROWS // 2 :] < 0.5).astype(int))
    assert done.returncode == 0, done.stdout + done.stderr
    retrain = one_flow_run(
        prefect_client, CT_DEPLOYMENT, "mlops.performance.degraded", timeout=60, reason="performance"
    )
    assert str(retrain.parameters["as_of"]) == "latest"
    prefect_client.set_flow_run_state(
        retrain.id, Cancelled(message="e2e: the trigger is what this test checks"), force=True
    )
