"""A person's decision on a version whose staging gates passed (`delivery.approval: manual`)."""

from __future__ import annotations

from prefect import runtime, task
from prefect.client.orchestration import get_client
from prefect.exceptions import FlowPauseTimeout
from prefect.flow_runs import pause_flow_run
from prefect.input import RunInput
from prefect.logging import get_run_logger
from prefect.states import Running
from pydantic import Field

from mlops import render
from mlops.adapters import registry
from mlops.config import Config
from mlops.domain.checks import Check
from tasks.delivery import now_utc
from tasks.retries import IO_RETRIES


class Approval(RunInput):
    """The form a manual-approval CD run waits for (the Prefect UI renders it; `mlops approve` and the API send it)."""

    approve: bool = Field(description="Promote this version to production (unticked: reject it)")
    approver: str = Field(min_length=1, max_length=200, description="Who decides: a name or an e-mail address")
    comment: str = Field(default="", max_length=2000, description="Why, for the version's record")


APPROVAL_POLL_S = 2  # how often the paused run looks for the answer


def await_approval(config: Config, candidate: registry.VersionRef, gates: list[Check]) -> Check:
    """Pause the run for a person's decision on the passed gates; no answer within the timeout rejects.

    Called from the flow, not as a task: a pause belongs to the flow run. The decision (who, when,
    why) is tagged on the version: `approval`, `approval_by`, `approval_at`, `approval_comment`.
    """
    model_name, version = candidate.name, candidate.version
    timeout = config.delivery.approval_timeout_s
    description = (
        f"{render.gates_markdown(model_name, version, 'staging gates passed, awaiting approval', gates)}\n"
        f"{_links(config, candidate)}\n\n"
        f"Approve to promote v{version} to production; reject, or no answer within {timeout} s, rolls staging back."
    )
    get_run_logger().info(
        "%s v%s awaits approval (timeout %d s): the Prefect UI's Resume form, or `mlops approve %s %s`",
        model_name,
        version,
        timeout,
        model_name,
        version,
    )
    try:
        answer = pause_flow_run(
            wait_for_input=Approval.with_initial_data(description=description, approve=False),
            timeout=timeout,
            poll_interval=APPROVAL_POLL_S,
            key=f"approval-{version}",
        )
    except FlowPauseTimeout:
        decision, by, comment = "timed_out", "nobody", f"no answer within {timeout} s"
        # The server keeps an expired pause Paused and would turn the run's end into "never resumed":
        # the run goes on (to reject and roll back), so it says it is running again.
        with get_client(sync_client=True) as client:
            client.set_flow_run_state(
                runtime.flow_run.id, Running(message=f"approval: {comment}; rejecting"), force=True
            )
    else:
        decision, by, comment = ("approved" if answer.approve else "rejected"), answer.approver, answer.comment
    at = now_utc()
    record_approval(
        config,
        model_name,
        version,
        {"approval": decision, "approval_by": by, "approval_at": at, "approval_comment": comment or "-"},
    )
    detail = (
        f"{comment}; rejected at {at}"
        if decision == "timed_out"
        else f"{decision} by {by} at {at}" + (f": {comment}" if comment else "")
    )
    return Check(name="approval", passed=decision == "approved", detail=detail[:1000])


@task(**IO_RETRIES)
def record_approval(config: Config, model_name: str, version: str, tags: dict[str, str]) -> None:
    """Who decided on the version, when and why, as its tags."""
    registry.tag_version(
        registry.connect(config), model_name, version, {key: value[:4000] for key, value in tags.items()}
    )


def _links(config: Config, candidate: registry.VersionRef) -> str:
    """Where an approver reads more: the version and its training run in MLflow."""
    found = [
        f"[{text}]({url})"
        for text, url in [
            (
                f"MLflow: {candidate.name} v{candidate.version}",
                registry.version_url(config, candidate.name, candidate.version),
            ),
            ("its training run", registry.run_url(config, candidate.run_id) if candidate.run_id else None),
        ]
        if url
    ]
    return " · ".join(found)
