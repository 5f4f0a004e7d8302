"""The environments' locks: one-slot Prefect global concurrency limits that every change to an environment holds.

One per use case and environment (`mlops-environment-<use case>-<environment>`): a delivery of one
use case never waits for another's.

CD, `production-rollback` and `mlops up`'s restore all apply Terraform in an environment's working
copy (`environments.initialise` rebuilds it), so two of them at once would pull it from under each
other. The flows hold the locks with Prefect's `concurrency()`; `up` takes leases by hand
(`holding_free`), since it must not wait out a delivery that holds one for minutes.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any
from uuid import UUID

from mlops import waiting
from mlops.adapters import environments

PREFIX = "mlops-environment-"


def lock_name(use_case: str, environment: str) -> str:
    """The limit that every change to `use_case`'s `environment` holds."""
    if environment not in environments.NAMES:
        raise ValueError(f"unknown environment {environment!r}; choose from {list(environments.NAMES)}")
    return f"{PREFIX}{use_case}-{environment}"


def use_case_locks(use_case: str) -> list[str]:
    """The locks of both of a use case's environments, which a delivery or a rollback holds together."""
    return [lock_name(use_case, name) for name in environments.NAMES]


def create_locks(client: Any, names: list[str]) -> None:
    """Create the one-slot limits `names` with a sync Prefect client, where missing."""
    from prefect.exceptions import ObjectAlreadyExists

    for name in names:
        with contextlib.suppress(ObjectAlreadyExists):  # another caller created it between the read and the create
            client.upsert_global_concurrency_limit_by_name(name, 1)


@contextmanager
def holding_free(client: Any, names: list[str], *, wait: float, lease: float) -> Iterator[set[str]]:
    """Hold each lock of `names` that comes free within `wait` seconds; yields the names held.

    Each hold is a lease of `lease` seconds (it expires by itself if this process dies) and is
    released when the block ends.
    """
    leases: dict[str, UUID] = {}
    try:
        create_locks(client, names)
        deadline = time.monotonic() + wait
        for name in names:
            if (held := _take(client, name, deadline, lease)) is not None:
                leases[name] = held
        yield set(leases)
    finally:
        for held in leases.values():
            client.release_concurrency_slots_with_lease(held)


def _take(client: Any, name: str, deadline: float, lease: float) -> UUID | None:
    """A lease on the one-slot limit `name`, polled until `deadline`; None when its holder keeps it."""
    from prefect.exceptions import PrefectHTTPStatusError

    def attempt() -> UUID | None:
        try:
            return UUID(
                client.increment_concurrency_slots_with_lease([name], 1, "concurrency", lease).json()["lease_id"]
            )
        except PrefectHTTPStatusError as exc:
            if exc.response.status_code != 423:  # 423 Locked: someone else holds it
                raise
            return None

    try:
        return waiting.wait_for(
            attempt, timeout=max(0.0, deadline - time.monotonic()), interval=1.0, what=f"lock {name}"
        )
    except waiting.TimedOut:
        return None
