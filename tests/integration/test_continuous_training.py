"""The whole CT flow in-process, against a temporary MLflow SQLite store, on one month of data."""

from __future__ import annotations

from datetime import date

import mlflow
import pandas as pd
import pytest
from mlflow.tracking import MlflowClient

from flows.continuous_training import continuous_training
from mlops.config import DEFAULT_CONFIG
from mlops.domain.validation import DataValidationError
from tests.conftest import DIABETES_CONFIG, write_config
from tests.integration.conftest import read_artifacts, read_flow_run_tags

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("prefect_backend")]

JANUARY = {"as_of": date(2013, 2, 1), "window_months": 1}


@pytest.fixture
def flights(isolated, monkeypatch):
    monkeypatch.setenv("MLOPS_CONFIG", str(DEFAULT_CONFIG))
    return MlflowClient()


def test_registers_a_challenger_with_lineage_then_compares_with_the_champion(flights):
    state = continuous_training(**JANUARY, reason="test", return_state=True)
    first = state.result()
    assert first["registered"] and first["version"] == "1"
    version = flights.get_model_version_by_alias("flights-delay", "challenger")
    assert str(version.version) == "1"
    assert version.tags["data_window"] == "2013-01-01..2013-02-01"
    assert version.tags["training_window"].startswith("2013-01-01..2013-01-2")  # fitted before the holdout
    assert version.tags["trigger_reason"] == "test"
    assert {"git_commit", "config_hash", "data_hash", "prefect_flow_run_id"} <= set(version.tags)
    run = flights.get_run(version.run_id)
    assert run.info.status == "FINISHED"
    assert run.data.metrics["test_roc_auc"] == pytest.approx(first["score"])
    assert "data_quality" in {a.path for a in flights.list_artifacts(version.run_id)}
    artifacts = read_artifacts(state.state_details.flow_run_id)
    assert {"holdout-metrics", "model-validation", "ct-summary", "model-card"} <= set(artifacts)
    # The model card: the version's description, its run's model_card.md, and the Prefect artifact.
    card = flights.get_model_version("flights-delay", "1").description
    assert card.startswith("# Model card: flights-delay v1\n") and "Pending: CD has not decided yet." in card
    assert "2013-01-01..2013-02-01" in card and "carrier=" not in card  # no champion yet: no per-segment comparison
    assert "model_card.md" in {a.path for a in flights.list_artifacts(version.run_id)}
    assert "reason:test" in read_flow_run_tags(state.state_details.flow_run_id)
    assert "carrier=" in artifacts["holdout-metrics"]

    flights.set_registered_model_alias("flights-delay", "champion", "1")
    second = continuous_training(**JANUARY, reason="test")
    # Same data and seed: the candidate ties the champion on the champion's own holdout (rows it never
    # trained on), which min_gain 0 accepts.
    assert second["registered"] and second["champion_score"] == pytest.approx(first["score"])
    assert "outside the champion's training window" in second["champion_comparison"]
    assert str(flights.get_model_version_by_alias("flights-delay", "champion").version) == "1"
    assert str(flights.get_model_version_by_alias("flights-delay", "challenger").version) == "2"
    card = flights.get_model_version("flights-delay", "2").description
    assert "| champion v1 |" in card and "carrier=" in card  # per segment, against the champion


def test_a_model_below_the_floors_is_logged_but_not_registered(isolated, monkeypatch):
    config = write_config(DEFAULT_CONFIG, isolated, {"gates.floors": {"roc_auc": 0.99}})
    monkeypatch.setenv("MLOPS_CONFIG", str(config))
    result = continuous_training(**JANUARY)
    assert not result["registered"]
    assert result["reasons"][0].startswith("floor roc_auc")
    client = MlflowClient()
    assert client.search_registered_models() == []
    assert client.get_run(result["run_id"]).data.tags["gate"] == "failed"


def test_another_use_case_by_its_folder_name_a_regression_csv_with_only_a_config(isolated):
    result = continuous_training(use_case="diabetes")  # usecases/diabetes/: no code of its own
    assert result["registered"] and result["metric"] == "rmse"
    assert result["window"] == "all"
    assert MlflowClient().get_model_version("diabetes-progression", "1").tags["use_case"] == "diabetes"
    version = MlflowClient().get_model_version_by_alias("diabetes-progression", "challenger")
    assert version.tags["dataset"] == "diabetes"


def test_a_batch_that_breaks_the_contract_stops_at_validation_and_registers_nothing(isolated, monkeypatch):
    good = pd.read_csv(DIABETES_CONFIG.parent / "diabetes.csv")
    bad = good.assign(bmi=good["bmi"] * 100, sex=good["sex"].where(good.index % 5 > 0, "unknown")).drop(columns=["s6"])
    bad.loc[3, "age"] = None
    bad.to_csv(isolated / "bad.csv", index=False)
    config = write_config(
        DIABETES_CONFIG, isolated, {"dataset.source": {"kind": "csv", "path": str(isolated / "bad.csv")}}
    )
    monkeypatch.setenv("MLOPS_CONFIG", str(config))

    state = continuous_training(return_state=True)
    assert state.is_failed()
    with pytest.raises(DataValidationError) as err:
        state.result()
    broken = {(v.column, v.rule) for v in err.value.violations}
    assert {
        ("s6", "missing_column"),
        ("bmi", "out_of_range"),
        ("sex", "unknown_category"),
        ("age", "not_nullable"),
    } <= broken
    report = read_artifacts(state.state_details.flow_run_id)["data-validation"]
    assert "out_of_range" in report and "`bmi`" in report
    client = MlflowClient()
    assert client.search_registered_models() == []
    runs = client.search_runs([client.get_experiment_by_name("diabetes-progression").experiment_id])
    assert [r.info.status for r in runs] == ["FAILED"]


def test_a_classification_table_sorted_by_its_target_trains_and_the_search_sees_every_class(isolated, monkeypatch):
    # Exported tables often come sorted by the label. Without a time column the search's validation part
    # follows the holdout's policy (seeded, stratified), so every candidate is scored on both classes.
    table = pd.read_csv(DIABETES_CONFIG.parent / "diabetes.csv")
    table = table.assign(high=(table["progression"] > table["progression"].median()).astype(int)).drop(
        columns="progression"
    )
    table.sort_values("high", kind="stable").to_csv(isolated / "sorted.csv", index=False)
    config = write_config(
        DIABETES_CONFIG,
        isolated,
        {
            "dataset.source": {"kind": "csv", "path": str(isolated / "sorted.csv")},
            "dataset.target": "high",
            "dataset.contract": None,
            "task": "binary",
            "gates": {"metric": "roc_auc", "floors": {"roc_auc": 0.6}},
        },
    )
    monkeypatch.setenv("MLOPS_CONFIG", str(config))
    result = continuous_training()
    assert result["registered"], result["reasons"]
    client = MlflowClient()
    candidates = mlflow.artifacts.load_dict(
        f"{client.get_run(result['run_id']).info.artifact_uri}/search/candidates.json"
    )
    assert len(candidates) == 4 and all(0.5 < c["score"] <= 1.0 for c in candidates)  # a one-class part scores NaN
