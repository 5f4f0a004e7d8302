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

from mlops import waiting
from mlops.config import load_config
from mlops.platform import stack as local_stack
from tests.e2e.conftest import OTHER_USE_CASES, served_version

pytestmark = pytest.mark.e2e

PYFUNC_PREDICT = """
import json, sys
import mlflow, pandas as pd
rows = pd.read_parquet(sys.argv[2])
print(json.dumps(mlflow.pyfunc.load_model(sys.argv[1]).predict(rows).tolist()))
"""


def test_two_use_cases_trained_at_once_are_each_delivered_to_their_own_production(stack, delivered, others_delivered):
    ct, cd = others_delivered.ct, others_delivered.cd
    diabetes, returns = (ct[u] for u in OTHER_USE_CASES)
    assert diabetes.start_time < returns.end_time and returns.start_time < diabetes.end_time, "the CT runs overlapped"
    for use_case in OTHER_USE_CASES:
        assert f"use-case:{use_case}" in ct[use_case].tags and f"use-case:{use_case}" in cd[use_case].tags
        assert cd[use_case].parameters["use_case"] == use_case, "the registration event named its use case"
        assert served_version(others_delivered.production[use_case]) == others_delivered.versions[use_case]
    flights = load_config()
    ports = {flights.serving.production_port, flights.serving.staging_port, *others_delivered.production.values()}
    assert len(ports) == 4, f"each production on a port of its own: {others_delivered.production}"
    assert served_version(flights.serving.production_port) is not None  # the session's use case still serves

    # `mlops status --json`: every use case with each environment's version, URL and health.
    report = local_stack.status_report(stack)
    for use_case in OTHER_USE_CASES:
        production = report["use_cases"][use_case]["environments"]["production"]
        assert production["version"] == others_delivered.versions[use_case] and production["healthy"] is True
        assert production["url"].endswith(f":{others_delivered.production[use_case]}")


def test_the_team_models_production_answers_as_its_registered_version_loaded_without_the_folder(
    stack, others_delivered, tmp_path: Path
):
    """LightGBM by import path behind the team's own transform, promoted on the stack: production's predictions equal
    `mlflow.pyfunc.load_model(...).predict` in a process where `usecases` is not importable (the code travels with
    the version)."""
    version = others_delivered.versions["returns"]
    run_id = mlflow.MlflowClient(stack.mlflow_uri).get_model_version("returns", version).run_id
    rows_file = Path(mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path="serving", dst_path=tmp_path))
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

    url = f"http://127.0.0.1:{others_delivered.production['returns']}"
    body = {"dataframe_split": json.loads(rows.to_json(orient="split", index=False))}
    answer = waiting.wait_for(
        lambda: (r := httpx.post(f"{url}/invocations", json=body, timeout=30)).status_code == 200 and r.json(),
        timeout=30,
        what="production of returns answering",
    )
    served = np.array(answer["predictions"])
    assert served.shape == expected.shape and np.abs(served - expected).max() <= 1e-9
    assert httpx.get(f"{url}/version", timeout=5).json()["prediction_path"] == "compiled"
