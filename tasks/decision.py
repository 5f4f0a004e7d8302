"""CD's decision about a version, made once and published once: its tags, its event, the `cd-decision`
artifact, the production history and the version's model card."""

from __future__ import annotations

from typing import Any, Literal

from prefect import runtime, task
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.events import emit_event
from prefect.logging import get_run_logger
from prefect.states import Completed, State
from pydantic import Field

from mlops import render
from mlops.adapters import cards, listings, registry
from mlops.config import USE_CASE_LABEL, Config
from mlops.domain.checks import Check, failures
from mlops.domain.record import Record
from tasks.delivery import now_utc
from tasks.gates import Gates, GatesFailed
from tasks.retries import IO_RETRIES

# The decisions' events, for `mlops.service.<environment>` (notifications: deployments/notifications.yaml).
PROMOTED, REJECTED, ROLLED_BACK = (
    "mlops.deployment.promoted",
    "mlops.deployment.rejected",
    "mlops.deployment.rolled_back",
)
EVENTS = {
    "promoted": (PROMOTED, "production"),
    "rejected": (REJECTED, "staging"),
    "rolled_back": (ROLLED_BACK, "production"),
}


class Decision(Record):
    """What a CD run decided about a version: promoted, rejected, rolled back; or skipped, or nothing to do."""

    status: Literal["promoted", "rejected", "rolled_back", "skipped", "noop"]
    model_name: str
    version: str
    outcome: str  # the `cd-decision` artifact's headline
    message: str  # the run's final state's message
    reason: str = ""
    gates: list[Check] = Field(default_factory=list)
    endpoint: str | None = None
    earlier: str | None = None  # a no-op's: the decision an earlier run made

    @property
    def decided(self) -> bool:
        return self.status in EVENTS

    def markdown(self) -> str:
        if self.decided:
            return render.gates_markdown(self.model_name, self.version, self.outcome, self.gates)
        return f"# {self.outcome}"

    def state(self) -> State:
        """The run's final state when nothing was raised: Completed (named "Rejected" for a rejection)."""
        data: dict[str, Any] = {"status": self.status, "version": self.version}
        if self.earlier:
            data["decision"] = self.earlier
        if self.status == "rejected":
            data["reason"] = self.reason
        if self.endpoint:
            data["endpoint"] = self.endpoint
        if self.decided:
            data["gates"] = [g.model_dump() for g in self.gates]
        named = {"name": "Rejected"} if self.status == "rejected" else {}
        return Completed(message=self.message, data=data, **named)


def skipped(model_name: str | None, version: str, config: Config | None) -> Decision:
    """Not delivered: no use case of this project registers the model, or the use case named registers another."""
    why = (
        f"{model_name} v{version} is not delivered: no use case of this project registers {model_name}"
        if config is None
        else f"{model_name} v{version} is not delivered: use case {config.name} registers {config.tracking.model_name}"
    )
    return Decision(status="skipped", model_name=str(model_name), version=version, outcome=why, message=why)


def serving_already(model_name: str, version: str) -> Decision:
    """A delivery of the version production serves: nothing to do."""
    serves = f"{model_name} v{version} already serves production"
    return Decision(
        status="noop", model_name=model_name, version=version, outcome=f"{serves}: nothing to do", message=serves
    )


def decided_already(candidate: registry.VersionRef) -> Decision:
    """One decision per version (a late webhook, a reconciliation, a second trigger): force delivers it again."""
    earlier = candidate.tags["deployment"]
    why = (
        f"{candidate.name} v{candidate.version} was already {earlier} "
        f"({candidate.tags.get('deployment_run', 'an earlier run')}); force=true delivers it again"
    )
    return Decision(
        status="noop", model_name=candidate.name, version=candidate.version, outcome=why, message=why, earlier=earlier
    )


def judge(
    gates: Gates, error: Exception | None, model_name: str, version: str, champion: str | None, endpoint: str | None
) -> Decision:
    """The delivery's decision from how its transaction ended: without an error, promoted; on a failed gate, or a
    step that broke before the gates passed, rejected; on anything after the gates passed, rolled back."""
    checks = gates.checks
    if error is None:
        status, outcome, reason = "promoted", f"promoted, serving at {endpoint}", ""
    elif isinstance(error, GatesFailed) or not gates.passed:
        if not isinstance(error, GatesFailed):  # a broken deployment is a failed gate too
            checks = [
                *checks,
                Check(name="staging deployment", passed=False, detail=f"{type(error).__name__}: {error}"[:500]),
            ]
        status, reason = "rejected", "; ".join(failures(checks))
        outcome = f"rejected; {f'staging back to v{champion}' if champion else 'staging destroyed (no champion yet)'}"
    else:
        status, reason = "rolled_back", f"rolled back after the gates passed: {type(error).__name__}: {error}"[:1000]
        outcome = f"rolled back; production back on {f'v{champion}' if champion else 'nothing'}"
    return Decision(
        status=status,
        model_name=model_name,
        version=version,
        outcome=outcome,
        message=reason or f"promoted v{version}",
        reason=reason,
        gates=checks,
        endpoint=endpoint if error is None else None,
    )


@task
def publish_decision(config: Config | None, decision: Decision) -> None:
    """The decision, once: a rejection or rollback tagged on the version, its event, the `cd-decision` artifact,
    then the production history and the version's model card."""
    name, version, gates, reason = decision.model_name, decision.version, decision.gates, decision.reason
    if decision.status in ("rejected", "rolled_back"):  # a promotion tagged the version as it moved the alias
        tag_decision(config, name, version, decision.status, gates, reason)
    if decision.decided:
        event, environment = EVENTS[decision.status]
        emit_decision(event, environment, name, version, gates, reason or None, use_case=config.name)
    create_markdown_artifact(key="cd-decision", markdown=decision.markdown())
    if decision.decided:
        publish_records(config, name, version, decision.outcome, gates)
    logger = get_run_logger()
    if decision.status == "promoted":
        logger.info("promoted %s v%s: production at %s", name, version, decision.endpoint)
    elif decision.status == "rejected":
        logger.warning("rejected %s v%s: %s; %s", name, version, reason, decision.outcome.removeprefix("rejected; "))
    elif decision.status == "rolled_back":
        logger.error("%s v%s %s", name, version, reason)


@task(**IO_RETRIES)
def tag_decision(config: Config, model_name: str, version: str, status: str, gates: list[Check], reason: str) -> None:
    """Tag the version `deployment=<rejected|rolled_back>` with the reason and this run; the champion is untouched."""
    registry.tag_version(
        registry.connect(config),
        model_name,
        version,
        {
            "deployment_at": now_utc(),
            "deployment": status,
            status: reason[:4000],
            "deployment_run": str(runtime.flow_run.id),
            "deployment_gates": render.checks_summary(gates),
        },
    )


def emit_decision(
    event: str,
    environment: str,
    model_name: str,
    version: str,
    gates: list[Check],
    reason: str | None = None,
    *,
    use_case: str,
) -> None:
    """`mlops.deployment.<promoted|rejected|rolled_back>` for `mlops.service.<environment>` of `use_case` (its
    `mlops.use-case` label and payload), naming the model version."""
    payload: dict[str, Any] = {
        "name": model_name,
        "version": version,
        "use_case": use_case,
        "gates": [g.model_dump() for g in gates],
    }
    if reason:
        payload["reason"] = reason
    emit_event(
        event=event,
        resource={"prefect.resource.id": f"mlops.service.{environment}", USE_CASE_LABEL: use_case},
        related=[{"prefect.resource.id": f"mlflow.model.{model_name}.{version}", "prefect.resource.role": "model"}],
        payload=payload,
    )


@task(**IO_RETRIES)
def update_model_card(config: Config, model_name: str, version: str, outcome: str, gates: list[Check]) -> None:
    """The delivery section of the version's model card: CD's decision, when, which run, the gates."""
    client = registry.connect(config)
    ref = registry.version(client, model_name, version)
    card = cards.model_card(client, ref) if ref is not None else None
    if (
        ref is None
        or ref.run_id is None
        or card is None
        or not card.startswith(f"# Model card: {model_name} v{version}\n")
    ):
        get_run_logger().info("%s v%s has no model card of its own to update", model_name, version)  # e.g. made by hand
        return
    at = f"{now_utc()}, CD flow run {runtime.flow_run.id}"
    cards.set_model_card(client, model_name, version, ref.run_id, render.with_delivery(card, outcome, at, gates))


@task(**IO_RETRIES)
def publish_history(config: Config, model_name: str) -> None:
    """The `production-history` table artifact: every decision, and when each promoted version served production."""
    changes = listings.history(registry.connect(config), model_name)
    create_table_artifact(
        key="production-history",
        table=render.history_rows(changes),
        description=f"{model_name}: which version served production, from when to when, and why it changed",
    )


def publish_records(config: Config, name: str, version: str, outcome: str, gates: list[Check]) -> None:
    """The history table and the version's model card after a decision (CD's, or a rollback by hand); a
    registry hiccup here never changes the decision already made."""
    for what, state in [
        ("production-history", publish_history(config, name, return_state=True)),
        ("model card", update_model_card(config, name, version, outcome, gates, return_state=True)),
    ]:
        if not state.is_completed():
            get_run_logger().warning("%s not updated: %s", what, state.message)
