"""Answer a CD run that waits for approval (`delivery.approval: manual`), as the Prefect UI's Resume form does.

The run is found by its model and version among the Paused runs of the `continuous-delivery`
flow; the answer is the run input its form asks for (`tasks.delivery.Approval`: approve, approver,
comment), sent with Prefect's own `resume_flow_run`. Prefect is imported inside the functions.
"""

from __future__ import annotations

from typing import Any

CD_FLOW = "continuous-delivery"


class NoPendingApproval(LookupError):
    """No CD run of that model version waits for an answer."""


def paused_delivery(client: Any, model_name: str, version: str, default_model: str) -> Any:
    """The Paused CD run of `model_name` v`version` (a run without `model_name` is for `default_model`)."""
    from prefect.client.schemas.filters import (
        FlowFilter,
        FlowFilterName,
        FlowRunFilter,
        FlowRunFilterState,
        FlowRunFilterStateType,
    )
    from prefect.client.schemas.objects import StateType

    runs = client.read_flow_runs(
        flow_filter=FlowFilter(name=FlowFilterName(any_=[CD_FLOW])),
        flow_run_filter=FlowRunFilter(state=FlowRunFilterState(type=FlowRunFilterStateType(any_=[StateType.PAUSED]))),
    )
    found = [
        r
        for r in runs
        if str(r.parameters.get("version")) == str(version)
        and (r.parameters.get("model_name") or default_model) == model_name
    ]
    if not found:
        raise NoPendingApproval(f"no continuous-delivery run of {model_name} v{version} waits for approval")
    return found[0]


def answer(model_name: str, version: str, *, approve: bool, approver: str, comment: str, default_model: str) -> str:
    """Resume the waiting CD run of the version with the decision; returns the run's name. Uses the current Prefect settings."""
    from prefect.client.orchestration import get_client
    from prefect.flow_runs import resume_flow_run

    with get_client(sync_client=True) as client:
        run = paused_delivery(client, model_name, version, default_model)
    resume_flow_run(run.id, run_input={"approve": approve, "approver": approver, "comment": comment})
    return run.name
