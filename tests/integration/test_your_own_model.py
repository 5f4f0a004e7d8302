"""A team's own use case folder: LightGBM by import path, its own transform and metric; CT, then its code shipped."""

from __future__ import annotations

import shutil
import subprocess
import sys

import mlflow
import numpy as np
import pandas as pd
import pytest
from mlflow.tracking import MlflowClient

from flows.continuous_training import continuous_training
from mlops import usercode
from mlops.adapters import model_files, registry
from mlops.config import load_config
from mlops.platform import cli
from mlops.serving.model import load_served_model
from tests.conftest import write_config, write_use_case
from tests.integration.conftest import read_flow_run_tags

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("prefect_backend")]


def test_ct_trains_a_use_case_folder_and_its_version_runs_its_own_code_after_the_folder_is_gone(isolated, monkeypatch):
    folder = write_use_case(isolated)
    monkeypatch.setenv("MLOPS_CONFIG", str(folder / "mlops.yaml"))
    monkeypatch.setattr(sys, "path", list(sys.path))  # the import root CT adds goes with the test

    result = continuous_training(reason="test")

    assert result["registered"], result
    assert result["metric"] == "top_decile_precision"  # the team's own metric decided
    client = MlflowClient()
    version = client.get_model_version_by_alias("returns", "challenger")
    run = client.get_run(version.run_id)
    assert run.data.metrics["test_top_decile_precision"] == pytest.approx(result["score"])
    assert run.data.params["estimator"] == "lightgbm.LGBMClassifier"
    assert version.tags["use_case"] == "returns"  # on the version, and the CT run's tag in Prefect
    assert "use-case:returns" in read_flow_run_tags(version.tags["prefect_flow_run_id"])
    ref = registry.version(client, "returns", version.version)
    assert ref is not None
    model = registry.load_model(ref)
    assert type(model.steps[-1][1]).__name__ == "LGBMClassifier"
    rows = pd.read_parquet(mlflow.artifacts.download_artifacts(run_id=version.run_id, artifact_path="serving"))
    expected = model.predict_proba(rows)

    # The version keeps the config it was trained with: an edit to the file changes how it is delivered
    # (ports, gates) but not what its data is (the split CD recomputes its holdout with).
    trained_with = load_config(folder / "mlops.yaml")
    edited = write_config(folder / "mlops.yaml", isolated, {"split.seed": 99, "serving.staging_port": 6001})
    seen = model_files.version_config(client, version.run_id, load_config(edited))
    assert (seen.split, seen.serving.staging_port) == (trained_with.split, 6001)
    snapshot = model_files.version_config(client, version.run_id, trained_with)
    assert snapshot.fingerprint() == trained_with.fingerprint() == version.tags["config_hash"]  # exactly as trained

    # The team's folder moves away (a later edit, another checkout): the version still runs its own copy.
    shutil.move(folder.parent, isolated / "moved-away")
    usercode.forget(["usecases"])
    loaded = mlflow.pyfunc.load_model(ref.uri)
    np.testing.assert_array_equal(loaded.predict(rows), expected)
    derive = loaded.get_raw_model().steps[0][1].steps[0][1].func
    assert derive.__module__ == "usecases.returns.model" and "/code/usecases/returns/" in derive.__code__.co_filename
    # Served: the team's transform in Python, LightGBM's trees compiled, checked against the model.
    served = load_served_model(ref.uri)
    assert served.path == "compiled", served.path_note
    assert "features by the model's own Pipeline in Python" in served.path_note


def test_mlops_new_scaffolds_a_use_case_that_trains_and_tests_with_no_edit(isolated, monkeypatch):
    data = write_use_case(isolated / "export") / "returns.csv"  # a team's CSV with a time column
    monkeypatch.setattr(sys, "path", list(sys.path))
    usercode.forget(["usecases"])

    assert cli.main(["new", "shop", "--data", str(data), "--target", "returned", "--time-column", "event_time",
                     "--into", str(isolated / "usecases")]) == 0  # fmt: skip
    folder = isolated / "usecases" / "shop"
    config = load_config(folder / "mlops.yaml")
    assert config.task == "binary" and config.use_case == "shop"
    assert (config.dataset.numeric, config.dataset.categorical) == (["amount", "n_items"], ["channel", "country"])
    assert config.dataset.segments == ["channel"] and config.dataset.contract_path == folder / "contract.json"
    assert config.features.transform == "usecases.shop.model:features"
    # Its own test passes as written (the team runs it with make test; CI runs it with -m unit).
    tested = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-m", "unit", "usecases/shop"],
        cwd=isolated, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert tested.returncode == 0 and "2 passed" in tested.stdout, tested.stdout + tested.stderr

    monkeypatch.setenv("MLOPS_CONFIG", str(folder / "mlops.yaml"))
    result = continuous_training(reason="test")
    assert result["registered"] and result["metric"] == "roc_auc", result
    assert str(MlflowClient().get_model_version_by_alias("shop", "challenger").version) == "1"
    # A second scaffold of the same name writes nothing.
    assert (
        cli.main(["new", "shop", "--data", str(data), "--target", "returned", "--into", str(isolated / "usecases")])
        == 2
    )


def test_each_other_use_case_gets_its_own_copy_of_every_schedule_once_and_keeps_its_switch():
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import DeploymentScheduleCreate
    from prefect.client.schemas.schedules import CronSchedule

    from mlops.platform import deploy as schedules

    with get_client(sync_client=True) as client:
        flow_id = client.create_flow_from_name("schedules-under-test")
        deployment_id = client.create_deployment(
            flow_id,
            "monthly-things",
            schedules=[
                DeploymentScheduleCreate(
                    schedule=CronSchedule(cron="0 6 1 * *"), active=True, slug="monthly", parameters={"as_of": "latest"}
                ),
                DeploymentScheduleCreate(schedule=CronSchedule(cron="0 7 * * *"), active=False, slug="daily"),
            ],
        )
        made = schedules.copy_for_use_cases(client, ["diabetes", "returns"])
        assert sorted(m for m in made if m.startswith("monthly-things/")) == [
            "monthly-things/daily-diabetes",
            "monthly-things/daily-returns",
            "monthly-things/monthly-diabetes",
            "monthly-things/monthly-returns",
        ]
        found = {s.slug: s for s in client.read_deployment(deployment_id).schedules}
        assert found["monthly-returns"].parameters == {"as_of": "latest", "use_case": "returns"}
        assert found["monthly-returns"].active and not found["daily-diabetes"].active  # as the file's
        assert found["monthly-returns"].schedule.cron == "0 6 1 * *"

        # The user turns one off in the UI (which sends only the switch: Prefect's server then empties the schedule's
        # parameters); the next `up` makes no second copy, gives it its use case back and keeps the switch.
        client.update_deployment_schedule(deployment_id, found["monthly-returns"].id, active=False)
        assert (
            client.read_deployment(deployment_id).schedules
            and not {s.slug: s for s in client.read_deployment(deployment_id).schedules}["monthly-returns"].parameters
        ), "Prefect keeps the parameters now: the repair can go"
        flags = schedules.remember(client)
        again = [m for m in schedules.copy_for_use_cases(client, ["diabetes", "returns"]) if "monthly-things" in m]
        assert again == ["monthly-things/monthly-returns (parameters repaired)"]
        assert schedules.restore(client, flags) == []
        after = {s.slug: s for s in client.read_deployment(deployment_id).schedules}
        assert len(after) == 6 and not after["monthly-returns"].active
        assert after["monthly-returns"].parameters == {"as_of": "latest", "use_case": "returns"}
