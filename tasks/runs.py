"""Tasks about the flow run itself: its name, its tags, the servers and locks it needs."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from prefect import runtime, task
from prefect.client.orchestration import get_client
from prefect.concurrency.sync import concurrency

from mlops.adapters import registry
from mlops.config import Config, load_config, use_case_parameter
from mlops.platform import locks
from tasks.retries import IO_RETRIES

UseCase = use_case_parameter()  # a flow's `use_case` type: the folders of usecases/ when deployed, its form offers them


def run_name(prefix: str, *parts: object) -> str:
    """A flow run's readable name, `<prefix>-<part>-…` (the flows' `flow_run_name` functions build it)."""
    return "-".join(str(part) for part in (prefix, *parts))


def run_parameter(key: str) -> Any:
    """A parameter of the flow run being named (None when it was not given)."""
    return runtime.flow_run.parameters.get(key)


def run_config() -> Config:
    """The config of the use case the flow run names (`use_case`; the stack's without one)."""
    return load_config(use_case=run_parameter("use_case"))


def run_model_name() -> str:
    """The registered model the flow run names: its `model_name`, else its use case's."""
    return run_parameter("model_name") or run_config().tracking.model_name


@task(retries=3, retry_delay_seconds=[2, 5, 15])
def tag_this_run(tags: list[str]) -> None:
    """Add tags to the running flow run, e.g. the commit a CI-triggered run trains (triggers cannot set tags)."""
    with get_client(sync_client=True) as client:
        run = client.read_flow_run(runtime.flow_run.id)
        client.update_flow_run(run.id, tags=sorted(set(run.tags) | set(tags)))


def remember_for_rollback(**values: object) -> None:
    """Keep values on the running task's transaction, where its `on_rollback` hook reads them back."""
    from prefect.transactions import get_transaction

    txn = get_transaction()
    if txn is not None:
        for key, value in values.items():
            txn.set(key, value)


@task
def require_servers(config: Config) -> None:
    """Before any work: the tracking server answers, or the run fails at once naming its URL and the fix."""
    registry.require_server(registry.tracking_uri(config))


def environment_locks(config: Config) -> list[str]:
    """The global concurrency limits (one slot each) that serialise changes to the use case's environments."""
    return locks.use_case_locks(config.name)


@task(**IO_RETRIES)
def ensure_locks(names: list[str]) -> None:
    """Create the one-slot global concurrency limits if missing (also in-process: an ephemeral server has none)."""
    with get_client(sync_client=True) as client:
        locks.create_locks(client, names)


@contextmanager
def holding_environments(config: Config) -> Iterator[None]:
    """Hold the use case's environment locks: one change to its environments at a time, in-process too."""
    names = environment_locks(config)
    ensure_locks(names)
    with concurrency(names, occupy=1, strict=True):
        yield
