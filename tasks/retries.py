"""The one retry policy of tasks that do I/O, and the errors that no retry can fix."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from prefect import Task
from prefect.client.schemas.objects import TaskRun
from prefect.states import State

# For tasks that call MLflow, Prefect or a service: three tries more, backing off.
IO_RETRIES: dict[str, Any] = {"retries": 3, "retry_delay_seconds": [2, 5, 15]}


def retry_unless(*permanent: type[BaseException]) -> Callable[[Task[..., Any], TaskRun, State[Any]], bool]:
    """A `retry_condition_fn` that retries any failure except the `permanent` error types."""

    def should_retry(task: Task[..., Any], task_run: TaskRun, state: State[Any]) -> bool:
        try:
            state.result()
        except permanent:
            return False
        except Exception:
            return True
        return True

    return should_retry
