"""Where CT's candidate search runs, by `compute` in mlops.yaml, the stack's profile and a scheduler address."""

from __future__ import annotations

import pytest

from mlops.config import Compute
from mlops.platform.settings import PROFILE_ENV
from tasks.compute import DASK_ADDRESS_ENV, search_compute

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(
    ("setting", "env", "runner", "address"),
    [
        ("auto", {}, "threads", None),
        ("auto", {PROFILE_ENV: "embedded"}, "threads", None),
        ("auto", {PROFILE_ENV: "scale"}, "dask", None),  # a LocalCluster per run
        ("auto", {DASK_ADDRESS_ENV: "tcp://10.0.0.5:8786"}, "dask", "tcp://10.0.0.5:8786"),
        (
            "threads",
            {PROFILE_ENV: "scale", DASK_ADDRESS_ENV: "tcp://10.0.0.5:8786"},
            "threads",
            None,
        ),  # the config wins
        ("dask", {}, "dask", None),
    ],
)
def test_the_search_runner_follows_config_profile_and_address(flights_config, setting, env, runner, address):
    config = flights_config.model_copy(update={"compute": Compute(search_runner=setting, dask_workers=3)})
    chosen = search_compute(config, env)
    assert (chosen.runner, chosen.address) == (runner, address)
    assert chosen.workers == (3 if runner == "dask" else 1)


def test_a_configured_address_is_used_unless_the_environment_names_another(flights_config):
    config = flights_config.model_copy(update={"compute": Compute(dask_address="tcp://127.0.0.1:8786")})
    assert search_compute(config, {}).address == "tcp://127.0.0.1:8786"
    assert search_compute(config, {DASK_ADDRESS_ENV: "tcp://127.0.0.1:9999"}).address == "tcp://127.0.0.1:9999"


def test_openmp_threads_per_candidate_fit_where_the_candidate_runs(flights_config):
    threads = search_compute(flights_config, {})
    local = search_compute(flights_config, {PROFILE_ENV: "scale"})
    remote = search_compute(flights_config, {DASK_ADDRESS_ENV: "tcp://10.0.0.5:8786"})
    assert (threads.omp_threads(2), local.omp_threads(2), remote.omp_threads(2)) == (2, 1, None)
