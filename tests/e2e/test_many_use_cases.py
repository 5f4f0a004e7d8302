"""Several use cases on one stack: trained together, each delivered to its own production by the automations."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import httpx
import mlflow
import numpy as np
import pandas as pd
import pytest
import yaml

from mlops import waiting
from mlops.config import PROJECT_ROOT, load_config
from mlops.platform.status import status_report
from tests.e2e.conftest import OTHER_USE_CASE, served_version

pytestmark = pytest.mark.e2e

PREFECT_YAML = PROJECT_ROOT / "prefect.yaml"
PYFUNC_PREDICT = """
import json, sys
import mlflow, pandas as pd
rows = pd.read_parquet(sys.argv[2])
print(json.dumps(mlflow.pyfunc.load_model(sys.argv[1]).predict(rows).tolist()))
"""


def test_two_use_cases_trained_at_once_are_each_delivered_to_their_own_production(
    stack, delivered, other_delivered, prefect_client
):
    """The session's use case and `returns`, CT started together on one stack: each registration routed by the
    automation to its own use case's CD, each production on its own port."""
    ours, theirs = delivered.ct, other_delivered.ct
    # Both were started while the other was pending or running; whether their running times overlap is the
    # scheduler's business (returns' short CT once ended before ours began under load): not asserted.
    assert theirs.start_time < ours.end_time, "returns' CT was started with the session's, not after it"
    assert f"use-case:{OTHER_USE_CASE}" in theirs.tags and f"use-case:{OTHER_USE_CASE}" in other_delivered.cd.tags
    assert other_delivered.cd.parameters["use_case"] == OTHER_USE_CASE, "the registration event named its use case"
    assert delivered.cd.parameters.get("use_case") is None  # the session's file is no folder: CD found it by model
    flights = load_config()
    assert f"use-case:{flights.name}" in ours.tags and f"use-case:{flights.name}" in delivered.cd.tags
    assert served_version(other_delivered.production) == other_delivered.version
    assert served_version(flights.serving.production_port) is not None  # the session's use case still serves
    assert other_delivered.production not in {flights.serving.production_port, flights.serving.staging_port}

    # The automations that routed them are named for what they do (the Automations page lists these names).
    triggers = [
        t["name"] for d in yaml.safe_load(PREFECT_YAML.read_text())["deployments"] for t in d.get("triggers", [])
    ]
    assert len(triggers) == 4 and all(len(prefect_client.read_automations_by_name(n)) == 1 for n in triggers), triggers

    # `mlops status --json`: every use case with each environment's version, URL and health.
    report = status_report(stack)
    assert {flights.name, OTHER_USE_CASE} <= set(report["use_cases"]), report["use_cases"]
    production = report["use_cases"][OTHER_USE_CASE]["environments"]["production"]
    assert production["version"] == other_delivered.version and production["healthy"] is True
    assert production["url"].endswith(f":{other_delivered.production}")


def test_the_team_models_production_answers_as_its_registered_version_loaded_without_the_folder(
    stack, other_delivered, tmp_path: Path
):
    """LightGBM by import path behind the team's own transform, promoted on the stack: production's predictions equal
    `mlflow.pyfunc.load_model(...).predict` in a process where `usecases` is not importable (the code travels with
    the version)."""
    version = other_delivered.version
    run_id = mlflow.MlflowClient(stack.mlflow_uri).get_model_version("returns", version).run_id
    rows_file = Path(
        mlflow.artifacts.download_artifacts(
            run_id=run_id, artifact_path="serving", dst_path=str(tmp_path), tracking_uri=stack.mlflow_uri
        )
    )
    rows = pd.read_parquet(rows_file)

    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["MLFLOW_TRACKING_URI"] = stack.mlflow_uri
    script = tmp_path / "predict.py"
    script.write_text(PYFUNC_PREDICT)
    done = subprocess.run(
        [sys.executable, "-c", "import usecases"], cwd=tmp_path, env=env, capture_output=True, text=True, check=False
    )
    assert done.returncode != 0, "usecases is importable outside the project: this test would prove nothing"
    done = subprocess.run(
        [sys.executable, str(script), f"models:/returns/{version}", str(rows_file)],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    expected = np.array(json.loads(done.stdout.strip().splitlines()[-1]))

    url = f"http://127.0.0.1:{other_delivered.production}"
    body = {"dataframe_split": json.loads(rows.to_json(orient="split", index=False))}
    answer = waiting.wait_for(
        lambda: (r := httpx.post(f"{url}/invocations", json=body, timeout=30)).status_code == 200 and r.json(),
        timeout=30,
        what="production of returns answering",
    )
    served = np.array(answer["predictions"])
    assert served.shape == expected.shape and np.abs(served - expected).max() <= 1e-9
    assert httpx.get(f"{url}/version", timeout=5).json()["prediction_path"] == "compiled"
