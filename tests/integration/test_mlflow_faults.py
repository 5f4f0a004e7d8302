"""CT against a real MLflow server that stops: retried where a retry can help, a clean failure where not.

The server is a real `mlflow server` process (`mlflow_server`); a fault is injected by stopping it
by pid at a chosen point of a real CT run, in-process with a throwaway Prefect backend. What must
hold: exactly one version per CT run, nothing registered by a run that failed, the champion alias
never moved by CT, and an error that names the server.
"""

from __future__ import annotations

import threading
from datetime import date

import pytest
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from flows.continuous_training import continuous_training
from mlops.adapters import registry
from mlops.config import DEFAULT_CONFIG
from mlops.domain import modeling

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("prefect_backend")]

MODEL = "flights-delay"
JANUARY = {"as_of": date(2013, 2, 1), "window_months": 1}


@pytest.fixture
def flights(mlflow_server, monkeypatch):
    monkeypatch.setenv("MLOPS_CONFIG", str(DEFAULT_CONFIG))
    return MlflowClient(mlflow_server.uri, registry_uri=mlflow_server.uri)


def _versions(client: MlflowClient) -> list[str]:
    return sorted(str(v.version) for v in client.search_model_versions(f"name = '{MODEL}'"))


def test_mlflow_restarted_at_registration_then_stopped_mid_training(flights, mlflow_server, monkeypatch):
    # 1. The server stops after it made the version and before `challenger` moves; it is back by
    #    the task's retry. The retry finishes that version instead of registering a second copy.
    real_set_alias = MlflowClient.set_registered_model_alias
    faults: list[str] = []

    def server_restarts_first(self, name, alias, version):
        if not faults:
            faults.append(str(version))
            mlflow_server.stop()
            with pytest.raises(MlflowException):  # the real client against a stopped server
                real_set_alias(self, name, alias, version)
            mlflow_server.start()
            raise ConnectionError("injected: the MLflow server restarted under the registration")
        return real_set_alias(self, name, alias, version)

    monkeypatch.setattr(MlflowClient, "set_registered_model_alias", server_restarts_first)
    first = continuous_training(**JANUARY, reason="fault")
    monkeypatch.setattr(MlflowClient, "set_registered_model_alias", real_set_alias)

    assert faults == ["1"], "the fault was not injected at the registration"
    assert first["registered"] and first["version"] == "1"
    assert _versions(flights) == ["1"], "a retried registration made a second version"
    assert str(flights.get_model_version_by_alias(MODEL, "challenger").version) == "1"
    assert flights.get_run(first["run_id"]).info.status == "FINISHED"
    flights.set_registered_model_alias(MODEL, "champion", "1")

    # 2. The server stops after the search and stays down: CT fails after its bounded retries,
    #    naming the server; nothing is registered and the champion is untouched.
    real_best = modeling.best_candidate
    stopped = threading.Event()

    def server_stops_after_the_search(*args, **kwargs):
        mlflow_server.stop()
        stopped.set()
        return real_best(*args, **kwargs)

    monkeypatch.setattr(modeling, "best_candidate", server_stops_after_the_search)
    state = continuous_training(**JANUARY, reason="fault", return_state=True)

    assert stopped.is_set()
    assert state.is_failed(), state
    assert mlflow_server.uri in str(state.message) and "make up" in str(state.message), state.message
    mlflow_server.start()
    assert _versions(flights) == ["1"], "a failed CT run left a version behind"
    assert str(flights.get_model_version_by_alias(MODEL, "champion").version) == "1"
    assert str(flights.get_model_version_by_alias(MODEL, "challenger").version) == "1"
    assert registry.champion(flights, MODEL).version == "1"


def test_two_ct_runs_at_once_register_one_version_each_and_leave_the_champion(flights):
    first = continuous_training(**JANUARY, reason="first")
    flights.set_registered_model_alias(MODEL, "champion", first["version"])

    results: dict[str, dict] = {}
    errors: list[BaseException] = []

    def train(reason: str) -> None:
        try:
            results[reason] = continuous_training(**JANUARY, reason=reason)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=train, args=(reason,)) for reason in ("left", "right")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=600)
    assert not errors, errors
    assert not any(t.is_alive() for t in threads), "a CT run did not finish within 600 s"

    made = {results[r]["version"] for r in ("left", "right")}
    assert made == {"2", "3"}, results  # one version each, none lost, none doubled
    assert _versions(flights) == ["1", "2", "3"]
    for reason in ("left", "right"):
        found = flights.get_model_version(MODEL, results[reason]["version"])
        assert found.tags["trigger_reason"] == reason and found.run_id == results[reason]["run_id"]
    assert str(flights.get_model_version_by_alias(MODEL, "challenger").version) in made
    assert str(flights.get_model_version_by_alias(MODEL, "champion").version) == "1"  # CT never moves it
