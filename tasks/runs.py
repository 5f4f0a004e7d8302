"""Tasks about the flow run itself."""

from __future__ import annotations

from prefect import runtime, task
from prefect.client.orchestration import get_client

from mlops.adapters import registry
from mlops.config import Config
from mlops.platform import locks
from tasks.retries import IO_RETRIES


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
