"""Where CT's candidate search runs, by `compute` in mlops.yaml, the stack's profile and a scheduler address."""

from __future__ import annotations

import pytest

from mlops.config import Compute
from tasks.compute import DASK_ADDRESS_ENV, search_compute

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(
    ("setting", "env", "profile", "runner", "address"),
    [
        ("auto", {}, "embedded", "threads", None),
        ("auto", {}, "scale", "dask", None),  # a LocalCluster per run
        ("auto", {DASK_ADDRESS_ENV: "tcp://10.0.0.5:8786"}, "embedded", "dask", "tcp://10.0.0.5:8786"),
        ("threads", {DASK_ADDRESS_ENV: "tcp://10.0.0.5:8786"}, "scale", "threads", None),  # the config wins
        ("dask", {}, "embedded", "dask", None),
    ],
)
def test_the_search_runner_follows_config_profile_and_address(flights_config, setting, env, profile, runner, address):
    config = flights_config.model_copy(update={"compute": Compute(search_runner=setting, dask_workers=3)})
    chosen = search_compute(config, env, profile)
    assert (chosen.runner, chosen.address) == (runner, address)
    assert chosen.workers == (3 if runner == "dask" else 1)


def test_a_configured_address_is_used_unless_the_environment_names_another(flights_config):
    config = flights_config.model_copy(update={"compute": Compute(dask_address="tcp://127.0.0.1:8786")})
    assert search_compute(config, {}).address == "tcp://127.0.0.1:8786"
    assert search_compute(config, {DASK_ADDRESS_ENV: "tcp://127.0.0.1:9999"}).address == "tcp://127.0.0.1:9999"


def test_openmp_threads_per_candidate_fit_where_the_candidate_runs(flights_config):
    threads = search_compute(flights_config, {}, "embedded")
    local = search_compute(flights_config, {}, "scale")
    remote = search_compute(flights_config, {DASK_ADDRESS_ENV: "tcp://10.0.0.5:8786"})
    assert (threads.omp_threads(2), local.omp_threads(2), remote.omp_threads(2)) == (2, 1, None)


def test_the_profile_comes_from_the_stack_settings(flights_config, monkeypatch):
    monkeypatch.setenv("MLOPS_PROFILE", "scale")  # as a flow run of a scale stack inherits it
    assert search_compute(flights_config, {}).runner == "dask"
