"""The CLI's commands that act through the running stack: `mlops approve`, `rollback` and `labels`.

`approve` answers a CD run that waits for approval (`delivery.approval: manual`) as the Prefect UI's Resume form
does: the run is found by its model and version among the Paused runs of the `continuous-delivery` flow, and the
answer is the run input its form asks for (approve, approver, comment), sent with Prefect's own `resume_flow_run`.
`rollback` and `labels` run their deployment on the stack's worker and wait for its outcome. Prefect is imported
inside the functions: the CLI starts in milliseconds.
"""

from __future__ import annotations

import argparse
import getpass
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from mlops import processes
from mlops.config import Config, load_config, stack_settings
from mlops.config.stack import StackNotSetUp, StackSettings
from mlops.platform.automations import prefect_settings

if TYPE_CHECKING:
    from prefect.client.schemas.objects import FlowRun

ROLLBACK_DEPLOYMENT = "production-rollback/rollback"
ROLLBACK_TIMEOUT_S = 1800  # a production apply under its environment lock, waiting for a delivery that holds it
FEEDBACK_DEPLOYMENT = "feedback/ingest"
LABELS_TIMEOUT_S = 1800
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


def _answering_stack(command: str, config: Config | None = None) -> StackSettings | None:
    """The stack's settings when its Prefect server answers; else None, having said how to start it."""
    stack = stack_settings(config or load_config())
    if processes.http_ok(f"{stack.prefect_api_url}/health"):
        return stack
    print(
        f"mlops {command}: the Prefect server at {stack.prefect_api_url} does not answer: start the local stack with "
        "`make up`",
        file=sys.stderr,
    )
    return None


def approve(args: argparse.Namespace) -> int:
    """`mlops approve NAME VERSION [--reject]`: resume the waiting CD run with the decision."""
    config = load_config()
    if (stack := _answering_stack("approve", config)) is None:
        return 2
    try:
        with prefect_settings(stack):
            run = answer(
                args.name,
                str(args.version),
                approve=not args.reject,
                approver=args.by or getpass.getuser(),
                comment=args.comment,
                default_model=config.tracking.model_name,
            )
    except (NoPendingApproval, StackNotSetUp) as exc:
        print(f"mlops approve: {exc}", file=sys.stderr)
        return 1
    print(f"{'rejected' if args.reject else 'approved'} {args.name} v{args.version}: {run} resumes")
    return 0


def rollback(args: argparse.Namespace) -> int:
    """Run the rollback deployment on the stack's worker and wait for its outcome."""
    parameters = {
        "reason": args.reason,
        "by": args.by or getpass.getuser(),
        "to_version": args.to,
        "model_name": args.model,
        "use_case": args.use_case,
    }
    return _run_on_stack("rollback", ROLLBACK_DEPLOYMENT, parameters, ROLLBACK_TIMEOUT_S)


def labels(args: argparse.Namespace) -> int:
    """Run the feedback deployment on the stack's worker with a batch of labels and wait for its outcome."""
    if bool(args.path) == bool(args.sql):
        print("mlops labels: give a file of labels or --sql QUERY (one of them)", file=sys.stderr)
        return 2
    parameters = {
        "path": str(Path(args.path).resolve()) if args.path else None,
        "sql": args.sql,
        "sql_url": args.sql_url,
        "use_case": args.use_case,
    }
    return _run_on_stack("labels", FEEDBACK_DEPLOYMENT, parameters, LABELS_TIMEOUT_S)


def _run_on_stack(command: str, deployment: str, parameters: dict[str, Any], timeout_s: int) -> int:
    """Run `deployment` on the stack's worker (None parameters left to their defaults), print its URL, wait for
    its final state and print it: 0 when it completed."""
    import asyncio

    from prefect.exceptions import FlowRunWaitTimeout

    if (stack := _answering_stack(command)) is None:
        return 2
    try:
        with prefect_settings(stack):
            from prefect.deployments import run_deployment
            from prefect.flow_runs import wait_for_flow_run

            run = cast(  # run_deployment is typed for its async call as well (async_dispatch): here it is sync
                "FlowRun",
                run_deployment(
                    deployment, parameters={k: v for k, v in parameters.items() if v is not None}, timeout=0
                ),
            )
            print(f"started {deployment}: {stack.prefect_url}/runs/flow-run/{run.id}", flush=True)
            # Prefect's `inject_client` decorator leaves the return type unresolved (R?) for mypy
            finished = cast("FlowRun", asyncio.run(wait_for_flow_run(run.id, timeout=timeout_s)))
            state = finished.state
            assert state is not None, "wait_for_flow_run returns the run once its state is final"
    except StackNotSetUp as exc:
        print(f"mlops {command}: {exc}", file=sys.stderr)
        return 1
    except FlowRunWaitTimeout:
        print(f"mlops {command}: not finished within {timeout_s} s; follow it in the Prefect UI", file=sys.stderr)
        return 1
    print(f"{state.name}: {state.message or ''}".strip())
    return 0 if state.is_completed() else 1
