"""Where CT's candidate search runs: the flow's own threads, or a Dask cluster through prefect-dask.

`compute.search_runner` in mlops.yaml decides; `auto` (the default) means Dask in the `scale`
profile (MLOPS_PROFILE=scale, which the stack hands to every flow run) or when a scheduler address
is given (DASK_SCHEDULER_ADDRESS, else `compute.dask_address`), threads otherwise. Without an
address, each CT run starts a LocalCluster of `compute.dask_workers` processes on 127.0.0.1 (no
dashboard) and closes it when the search ends.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any, Literal

from mlops.config import Config, stack_settings
from mlops.domain.record import Record

DASK_ADDRESS_ENV = "DASK_SCHEDULER_ADDRESS"  # Dask's own name for it


class SearchCompute(Record):
    """The search's runner, as chosen for one run."""

    runner: Literal["threads", "dask"]
    address: str | None = None  # an existing scheduler; None with dask: a LocalCluster for the run
    workers: int = 1  # the LocalCluster's processes

    def describe(self) -> str:
        if self.runner == "threads":
            return "this flow run's threads"
        return (
            f"the Dask scheduler at {self.address}"
            if self.address
            else f"a Dask LocalCluster of {self.workers} processes"
        )

    def omp_threads(self, threads: int) -> int | None:
        """OpenMP threads per candidate: the flow's share of the cores; one per LocalCluster worker; a cluster's own setting."""
        if self.runner == "threads":
            return threads
        return None if self.address else 1


def search_compute(config: Config, env: Mapping[str, str] = os.environ, profile: str | None = None) -> SearchCompute:
    """The runner `config.compute` asks for in this environment and the stack's profile (default: its settings')."""
    address = env.get(DASK_ADDRESS_ENV) or config.compute.dask_address
    runner = config.compute.search_runner
    if runner == "auto":
        profile = profile or stack_settings(config).profile
        runner = "dask" if address or profile == "scale" else "threads"
    if runner == "threads":
        return SearchCompute(runner="threads")
    return SearchCompute(runner="dask", address=address, workers=config.compute.dask_workers)


def dask_task_runner(compute: SearchCompute) -> Any:
    """prefect-dask's runner for `compute`: the given scheduler, or a LocalCluster on 127.0.0.1 only."""
    from prefect_dask import DaskTaskRunner

    if compute.address:
        return DaskTaskRunner(address=compute.address)
    return DaskTaskRunner(
        cluster_class="distributed.LocalCluster",
        cluster_kwargs={
            "n_workers": compute.workers,
            "threads_per_worker": 1,
            "processes": True,
            "host": "127.0.0.1",
            "dashboard_address": None,
        },
    )
