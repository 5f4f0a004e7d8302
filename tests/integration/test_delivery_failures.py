"""CD's failure paths in-process with the real parts: Terraform, `mlops serve`, locust, MLflow on SQLite.

Every case is a real delivery that must end without moving anything: the version is tagged
`rejected` with the reason, the `cd-decision` artifact says where staging went, and production
still serves the champion (or, with none, nothing answers). The cases that need a champion share
one per module (v1 from CT, promoted by CD); each test registers its own candidate next to it,
so any one of them runs alone.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any

import httpx
import mlflow
import pandas as pd
import pytest
from mlflow.models import infer_signature
from mlflow.tracking import MlflowClient

from flows.continuous_delivery import continuous_delivery
from flows.continuous_training import continuous_training
from mlops import processes
from mlops.adapters import environments, loadtest, model_files, registry, service_checks, sources
from mlops.adapters import terraform as tf
from mlops.config import Config, load_config
from mlops.domain import modeling
from mlops.domain.evaluation import predict_outputs
from mlops.domain.split import split_frame
from tests.conftest import quick_delivery_config, write_config
from tests.integration.conftest import read_artifacts
from tests.integration.test_continuous_delivery import (  # noqa: F401
    MODEL,
    _lineage,
    _served_version,
    delivery_config,
)

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("prefect_backend")]


@dataclass(frozen=True)
class Champion:
    """The module's store: its config file, and v1 serving production behind `champion`."""

    path: Path
    config: Config
    version: str = "1"


@pytest.fixture(scope="module")
def champion(prefect_backend, tmp_path_factory) -> Iterator[Champion]:
    """As `isolated` + `delivery_config`, for the whole module; then CT trains v1 and CD promotes it."""
    tmp = tmp_path_factory.mktemp("delivery-failures")
    uri = f"sqlite:///{tmp}/mlflow.db"
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MLFLOW_TRACKING_URI", uri)
        patch.setenv("MLOPS_STATE_DIR", str(tmp / "state"))
        mlflow.set_tracking_uri(uri)
        path = quick_delivery_config(tmp)
        patch.setenv("MLOPS_CONFIG", str(path))
        config = load_config(path)
        try:
            assert continuous_training(as_of=date(2013, 2, 1), window_months=1)["version"] == "1"
            assert continuous_delivery(version="1")["status"] == "promoted"
            yield Champion(path, config)
        finally:
            for name in environments.NAMES:  # stops the services Terraform started
                environments.destroy(config, name)
            mlflow.set_tracking_uri(None)


# --- helpers ---------------------------------------------------------------------------------------


def _answers(port: int) -> bool:
    try:
        return httpx.get(f"http://127.0.0.1:{port}/ping", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def _copy_of_champion(champion: Champion) -> str:
    """A new, undecided version of the champion's own model (its lineage, no decision tags)."""
    client = MlflowClient()
    found = client.get_model_version(MODEL, champion.version)
    return str(client.create_model_version(MODEL, found.source, run_id=found.run_id, tags=_lineage(found.tags)).version)


def _january_fitted_part(config: Config) -> pd.DataFrame:
    """The rows CT fits on for the config's window (January 2013): everything before the holdout."""
    return split_frame(sources.load_labelled_window(config, None).frame, config)[0]


def _fit(config: Config, train: pd.DataFrame, **params: Any):
    """A pipeline built and fitted with the domain's own functions, as CT builds one."""
    X, y = modeling.features_and_target(train, config)
    preprocessor = modeling.build_preprocessor(config).fit(X)
    return modeling.assemble_model(preprocessor, modeling.fit_estimator(config, params, preprocessor.transform(X), y))


def _register(
    config: Config, model: Any, example: pd.DataFrame, tags: dict[str, str], log=model_files.log_model
) -> str:
    """Log `model` into a new run with `log` (default: the project's `log_model`) and register it; returns the version."""
    client = registry.connect(config)
    with mlflow.start_run() as run:
        uri = log(model, example, predict_outputs(model, example, config.task), config)
    return registry.register(client, uri, run.info.run_id, config, tags)


def _deliver(version: str):
    """One CD run; its final state, the `cd-decision` artifact and the version's tags after it."""
    state = continuous_delivery(version=version, return_state=True)
    decision = read_artifacts(state.state_details.flow_run_id)["cd-decision"]
    return state, decision, MlflowClient().get_model_version(MODEL, version).tags


def _rejected(state) -> str:
    """The reason of a run that ended Rejected (completed, nothing moved)."""
    assert state.is_completed() and state.name == "Rejected", state
    result = state.result()
    assert result["status"] == "rejected", result
    return result["reason"]


def _production_untouched(champion: Champion) -> None:
    client = MlflowClient()
    assert str(client.get_model_version_by_alias(MODEL, "champion").version) == champion.version
    assert client.get_model_version(MODEL, champion.version).tags["deployment"] == "promoted"
    assert _served_version(champion.config.serving.production_port) == champion.version


# --- no champion yet ------------------------------------------------------------------------------


def _log_with_float32_inputs(model: Any, example: pd.DataFrame, outputs: Any, config: Config) -> str:
    """As `model_files.log_model`, except that the signature declares the numeric inputs float32, not double.

    The service casts each request to the signature's types, so it scores float32-rounded weather
    values where the model was trained (and is evaluated offline) on float64 ones: a train/serve
    skew of the real kind, invisible to the contract and to the floors.
    """
    return model_files.log_model(model, example, outputs, config, numeric_as="float32")


def test_a_skewed_first_version_is_rejected_and_staging_is_destroyed(delivery_config):  # noqa: F811
    config = load_config(delivery_config)
    train = _january_fitted_part(config)
    model = _fit(config, train, **modeling.candidate_grid(config)[0])
    example = modeling.features_and_target(train.head(200), config)[0]
    version = _register(config, model, example, tags={}, log=_log_with_float32_inputs)  # by hand: the config's window

    state, decision, tags = _deliver(version)

    reason = _rejected(state)
    assert "live performance" in reason and "train/serve skew" in reason, reason
    assert "floor" not in reason and "contract" not in reason and "load test" not in reason, reason
    assert "rejected; staging destroyed (no champion yet)" in decision
    assert tags["deployment"] == "rejected" and "train/serve skew" in tags["rejected"]
    assert registry.champion(MlflowClient(), MODEL) is None
    assert not _answers(config.serving.staging_port)  # the rollback destroyed staging
    assert not _answers(config.serving.production_port)  # and production never existed


# --- against the champion --------------------------------------------------------------------------


def test_a_failing_load_test_rejects_and_staging_returns_to_the_champion(champion, monkeypatch):
    version = _copy_of_champion(champion)  # as good as the champion: only the SLO can fail
    impossible = write_config(champion.path, champion.path.parent, {"slo.min_rps": 1_000_000})
    monkeypatch.setenv("MLOPS_CONFIG", str(impossible))

    state, decision, tags = _deliver(version)

    reason = _rejected(state)
    assert "load test" in reason and "throughput rps" in reason, reason
    assert "live performance" not in reason and "contract" not in reason, reason
    assert f"rejected; staging back to v{champion.version}" in decision
    assert tags["deployment"] == "rejected" and "load test" in tags["rejected"]
    _production_untouched(champion)
    assert _served_version(champion.config.serving.staging_port) == champion.version


def test_a_staging_apply_that_fails_rejects_the_version_and_fails_the_run(champion, monkeypatch, tmp_path):
    version = _copy_of_champion(champion)
    # The real Terraform for every command but `apply`, which fails as a broken provider or a full disk would.
    wrapper = tmp_path / "terraform"
    wrapper.write_text(
        f'#!/bin/sh\nif [ "$1" = apply ]; then echo "injected: apply refused" >&2; exit 1; fi\n'
        f'exec "{tf.terraform_bin()}" "$@"\n'
    )
    wrapper.chmod(0o755)
    monkeypatch.setenv(tf.TERRAFORM_ENV, str(wrapper))

    state, decision, tags = _deliver(version)

    assert state.is_failed() and "injected: apply refused" in str(state.message), state
    assert "staging deployment" in decision and "TerraformError" in decision
    assert tags["deployment"] == "rejected" and "staging deployment" in tags["rejected"]
    assert "injected: apply refused" in tags["rejected"]
    monkeypatch.delenv(tf.TERRAFORM_ENV)  # the real Terraform again, to read what serves where
    _production_untouched(champion)
    assert _served_version(champion.config.serving.staging_port) == champion.version  # the failed apply changed nothing


def test_a_candidate_above_the_floors_that_loses_to_the_champion_is_rejected(champion):
    config = champion.config
    train = _january_fitted_part(config)
    weak = _fit(config, train, max_iter=3, max_leaf_nodes=3, learning_rate=0.5)  # ≈ 0.63 roc_auc: above the 0.6 floor
    lineage = _lineage(
        MlflowClient().get_model_version(MODEL, champion.version).tags
    )  # compared on the champion's holdout
    version = _register(config, weak, modeling.features_and_target(train.head(200), config)[0], lineage)

    state, decision, tags = _deliver(version)

    reason = _rejected(state)
    assert "live performance" in reason and "gain roc_auc over champion" in reason, reason
    assert "floor" not in reason and "train/serve skew" not in reason, reason
    assert f"rejected; staging back to v{champion.version}" in decision
    assert tags["deployment"] == "rejected" and "gain roc_auc over champion" in tags["rejected"]
    _production_untouched(champion)
    assert _served_version(config.serving.staging_port) == champion.version


def _log_with_mlflow_defaults(model: Any, example: pd.DataFrame, outputs: Any, config: Config) -> str:
    """The champion's pipeline logged by hand with MLflow's default `pyfunc_predict_fn`: the service answers class labels."""
    example = example.astype(dict.fromkeys(config.dataset.numeric, "float64"))
    info = mlflow.sklearn.log_model(
        model,
        name="model",
        signature=infer_signature(example, model.predict(example)),
        input_example=example.head(5),
        serialization_format="skops",
        skops_trusted_types=model_files.TRUSTED_TYPES,
    )
    return info.model_uri


def test_a_service_that_breaks_the_output_contract_is_rejected(champion):
    config = champion.config
    found = registry.version(registry.connect(config), MODEL, champion.version)
    model = registry.load_model(found)
    example = modeling.features_and_target(_january_fitted_part(config).head(200), config)[0]
    version = _register(config, model, example, _lineage(found.tags), log=_log_with_mlflow_defaults)

    state, decision, tags = _deliver(version)

    # Labels where class probabilities are declared: the contract's valid-row cases fail, and the live
    # predictions' shape differs from the offline model's (skew, not a crash): a clean rejection.
    assert state.is_completed() and state.name == "Rejected", state
    assert "| contract | **FAIL** |" in decision and f"rejected; staging back to v{champion.version}" in decision, (
        decision
    )
    cases = read_artifacts(state.state_details.flow_run_id)["contract-tests"]
    assert "valid rows (dataframe_split)" in cases and "valid rows (dataframe_records)" in cases
    assert tags["deployment"] == "rejected" and tags["rejected"].startswith("contract: ")
    assert "failed: valid rows (dataframe_split), valid rows (dataframe_records)" in tags["rejected"]
    _production_untouched(champion)
    assert _served_version(config.serving.staging_port) == champion.version


def _service_pid(champion: Champion, environment: str = "staging") -> int:
    """The pid of an environment's service, from the pid file its Terraform state names (a `PidRecord`, written by
    `python -m mlops.processes start`: the leader of the service's process group)."""
    record = processes.read_pid_file(Path(environments.current_service(champion.config, environment)["pid_file"]))
    assert record is not None, f"{environment} has no service pid file"
    return record.pid


def test_a_staging_service_killed_during_the_load_test_rejects_and_staging_comes_back_on_the_champion(
    champion, monkeypatch
):
    version = _copy_of_champion(champion)
    real_run_locust = loadtest.run_locust
    killed: list[int] = []

    def staging_dies_as_the_load_starts(endpoint, *args, **kwargs):
        # SIGKILL, as the OOM killer or a crash would: the service says nothing on its way out.
        assert str(champion.config.serving.staging_port) in endpoint
        pid = _service_pid(champion)
        os.killpg(pid, signal.SIGKILL)  # the service's process group (processes starts it in its own session)
        killed.append(pid)
        return real_run_locust(endpoint, *args, **kwargs)

    monkeypatch.setattr(loadtest, "run_locust", staging_dies_as_the_load_starts)

    state, decision, tags = _deliver(version)

    assert killed, "the load test never ran"
    reason = _rejected(state)
    assert "load test" in reason and "error rate" in reason, reason
    assert f"rejected; staging back to v{champion.version}" in decision
    assert tags["deployment"] == "rejected" and "load test" in tags["rejected"]
    _production_untouched(champion)
    assert (
        _served_version(champion.config.serving.staging_port) == champion.version
    )  # a new process: the dead one was replaced
    assert _service_pid(champion) != killed[0]


# --- after the promotion: the watch ---------------------------------------------------------------


def test_production_dying_while_watched_rolls_back_to_the_previous_champion(champion, monkeypatch):
    """Promoted, then production stops answering during the watch: the delivery rolls back."""
    version = _copy_of_champion(champion)
    real_watch = service_checks.watch_service
    killed: list[int] = []

    def production_dies_as_the_watch_starts(endpoint, *args, **kwargs):
        assert str(champion.config.serving.production_port) in endpoint
        assert _served_version(champion.config.serving.production_port) == version  # promoted, serving the new one
        assert str(MlflowClient().get_model_version_by_alias(MODEL, "champion").version) == version
        pid = _service_pid(champion, "production")
        os.killpg(pid, signal.SIGKILL)
        killed.append(pid)
        return real_watch(endpoint, *args, **kwargs)

    monkeypatch.setattr(service_checks, "watch_service", production_dies_as_the_watch_starts)

    state = continuous_delivery(version=version, return_state=True)

    assert killed, "the watch never ran"
    assert state.is_failed() and "production watch" in str(state.message), state
    decision = read_artifacts(state.state_details.flow_run_id)["cd-decision"]
    assert f"rolled back; production back on v{champion.version}" in decision
    tags = MlflowClient().get_model_version(MODEL, version).tags
    assert tags["deployment"] == "rolled_back" and "error rate 100.00%" in tags["rolled_back"], tags
    _production_untouched(champion)  # the champion alias and production are back on v1 ...
    assert _service_pid(champion, "production") != killed[0]  # ... in a new process


# --- by hand: the rollback ------------------------------------------------------------------------


def test_a_rollback_by_hand_serves_the_previous_champion_again_and_records_who_and_why(champion):
    """Last in the module: it leaves v1 the champion again, without a `previous_champion`."""
    from flows.rollback import production_rollback
    from mlops.adapters import listings

    version = _copy_of_champion(champion)
    state, _, tags = _deliver(version)
    assert state.is_completed() and tags["deployment"] == "promoted", state
    assert _served_version(champion.config.serving.production_port) == version

    result = production_rollback(reason="complaints from the ops team", by="bob")

    assert (result["status"], result["from"], result["to"]) == ("rolled_back", version, champion.version), result
    _production_untouched(champion)  # the alias and production back on v1
    client = MlflowClient()
    out, back = (client.get_model_version(MODEL, v).tags for v in (version, champion.version))
    assert out["deployment"] == "promoted" and out["rolled_back"] == "by bob: complaints from the ops team", out
    assert back["restored"] == out["rolled_back"] and back["restored_at"] == out["rolled_back_at"], back
    assert registry.aliased(client, MODEL, registry.PREVIOUS_CHAMPION) is None
    changes = [(c.version, c.decision, c.serving) for c in listings.history(client, MODEL)]
    assert changes[-2:] == [(version, "promoted", False), (champion.version, "restored", True)], changes

    # No previous_champion now: a second rollback must name its target; a version that never served is refused.
    for params, why in [({}, "no previous_champion"), ({"to_version": "999"}, "no version 999")]:
        again = production_rollback(reason="again", by="bob", return_state=True, **params)
        assert again.is_failed() and why in str(again.message), again
    assert _served_version(champion.config.serving.production_port) == champion.version


def test_a_version_whose_code_cannot_be_loaded_fails_staging_with_the_reason(champion, tmp_path, monkeypatch):
    # Logged by hand from a notebook: a transform from the notebook's own module, not shipped with the model.
    import importlib

    import skops.io
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import FunctionTransformer

    (tmp_path / "notebook_features.py").write_text("def same(frame):\n    return frame\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    same = importlib.import_module("notebook_features").same
    served = registry.load_model(registry.version(MlflowClient(), MODEL, champion.version))
    model = Pipeline([("notebook", FunctionTransformer(same)), ("model", served)])

    def log_without_its_code(model: Any, example: pd.DataFrame, outputs: Any, config: Config) -> str:
        return mlflow.sklearn.log_model(
            model,
            name="model",
            signature=infer_signature(example, outputs),
            serialization_format="skops",
            skops_trusted_types=skops.io.get_untrusted_types(data=skops.io.dumps(model)),
            pyfunc_predict_fn="predict_proba",
        ).model_uri

    example = modeling.features_and_target(_january_fitted_part(champion.config).head(50), champion.config)[0]
    version = _register(champion.config, model, example, tags={}, log=log_without_its_code)

    state, decision, tags = _deliver(version)

    assert state.is_failed()
    # At once (the service exited), not after the health check's 120 s, and saying why.
    assert "what it waited on exited" in tags["rejected"], tags["rejected"]
    assert "No module named 'notebook_features'" in tags["rejected"], tags["rejected"]
    assert f"staging back to v{champion.version}" in decision
    _production_untouched(champion)
    assert _served_version(champion.config.serving.staging_port) == champion.version
