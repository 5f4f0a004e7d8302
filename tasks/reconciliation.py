"""Reconciliation tasks: versions CD never decided on, the CD runs under way, and starting the missing ones."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from prefect import task
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import (
    DeploymentFilter,
    DeploymentFilterId,
    FlowRunFilter,
    FlowRunFilterExpectedStartTime,
    FlowRunFilterState,
    FlowRunFilterStateType,
)
from prefect.client.schemas.objects import FlowRun, StateType
from prefect.deployments import run_deployment
from prefect.exceptions import ObjectNotFound

from mlops.adapters import listings, registry
from mlops.config import Config, load_config
from tasks.retries import IO_RETRIES, retry_unless

CD_DEPLOYMENT = "continuous-delivery/deploy-model"
IN_FLIGHT = (StateType.SCHEDULED, StateType.PENDING, StateType.RUNNING, StateType.PAUSED, StateType.CANCELLING)
ENDED = (StateType.COMPLETED, StateType.FAILED, StateType.CANCELLED, StateType.CRASHED)
PAGE = 200
CLOCK_MARGIN = timedelta(hours=1)  # MLflow's and Prefect's clocks may differ: read ended runs from a little earlier

# What the reconciliation does with an undelivered version (the words of the artifact).
START, IN_FLIGHT_NOW, TOO_RECENT = "started", "in flight", "too recent"
CHAMPION, SUPERSEDED, HELD, GAVE_UP = "champion", "superseded", "held", "gave up"


class NoDeliveryDeployment(LookupError):
    """The CD deployment does not exist on this Prefect server; no retry can fix it."""


@dataclass(frozen=True)
class DeliveryRun:
    """One `continuous-delivery/deploy-model` flow run, as the reconciliation reads it."""

    id: str
    name: str
    version: str
    state: str  # the state's name: Scheduled, Late, Running, Failed, ...
    state_type: StateType

    @property
    def in_flight(self) -> bool:
        return self.state_type in IN_FLIGHT


@dataclass(frozen=True)
class Finding:
    """What the reconciliation did with one undelivered version, and why."""

    version: str
    registered: str  # UTC, to the second
    action: str
    detail: str
    attempt: int = 0  # START: the how-manieth CD run of this version it is
    flow_run_id: str | None = None


def _open(version: str, champion: str | None) -> bool:
    """Newer than the champion (or no champion yet): a version the reconciliation may deliver."""
    return champion is None or int(version) > int(champion)


def open_since(registrations: list[listings.Registration], champion: str | None) -> float | None:
    """When the oldest version the reconciliation may deliver was registered; None when there is none."""
    times = [r.registered_at for r in registrations if _open(r.ref.version, champion)]
    return min(times) if times else None


def plan_deliveries(
    registrations: list[listings.Registration],
    champion: str | None,
    runs: list[DeliveryRun],
    now: float,
    min_age_seconds: float,
    max_attempts: int,
) -> list[Finding]:
    """The policy, pure: which undelivered versions get a CD run now, and why each other one does not."""
    findings = []
    for registration in registrations:
        version, age = registration.ref.version, now - registration.registered_at
        registered = datetime.fromtimestamp(registration.registered_at, UTC).strftime("%Y-%m-%d %H:%M:%S")
        mine = [r for r in runs if r.version == version]
        under_way = [r for r in mine if r.in_flight]
        ended = [r for r in mine if not r.in_flight]
        attempt = 0
        if champion is not None and version == champion:
            action, detail = CHAMPION, "is the champion (its alias was set without a CD decision): not delivered again"
        elif not _open(version, champion):
            action, detail = (
                SUPERSEDED,
                f"older than champion v{champion}: not delivered (run CD by hand to deliver it)",
            )
        elif under_way:
            action, detail = IN_FLIGHT_NOW, ", ".join(f"CD run {r.name} is {r.state}" for r in under_way)
        elif any(r.state_type == StateType.CANCELLED for r in ended):
            action, detail = HELD, "a CD run for it was cancelled: left to a person"
        elif len(ended) >= max_attempts:
            states = ", ".join(sorted({r.state for r in ended}))
            action, detail = GAVE_UP, f"{len(ended)} CD runs ended without a decision ({states}): left to a person"
        elif age < min_age_seconds:
            action, detail = TOO_RECENT, f"registered {age:.0f} s ago: the webhook's CD run may still be on its way"
        else:
            attempt = len(ended) + 1
            action, detail = (
                START,
                "no decision and no CD run under way" + (f"; {len(ended)} ended without one" if ended else ""),
            )
        findings.append(Finding(version=version, registered=registered, action=action, detail=detail, attempt=attempt))
    return findings


def _delivery_run(run: FlowRun) -> DeliveryRun:
    state = run.state
    return DeliveryRun(
        id=str(run.id),
        name=run.name,
        version=str(run.parameters.get("version")),
        state=state.name if state else "no state",
        state_type=run.state_type or StateType.SCHEDULED,
    )


@task(**IO_RETRIES, retry_condition_fn=retry_unless(NoDeliveryDeployment))
def read_delivery_runs(
    config: Config, model_name: str, in_flight: bool, since: float | None = None
) -> list[DeliveryRun]:
    """CD runs of `model_name` that are not over yet (`in_flight`), or that ended, expected to start after `since`."""
    with get_client(sync_client=True) as client:
        try:
            deployment = client.read_deployment_by_name(CD_DEPLOYMENT)
        except ObjectNotFound:
            raise NoDeliveryDeployment(
                f"no deployment {CD_DEPLOYMENT} on this Prefect server: `mlops up` (`prefect deploy --all`) creates it"
            ) from None
        after = datetime.fromtimestamp(since, UTC) - CLOCK_MARGIN if since is not None else None
        runs_filter = FlowRunFilter(
            state=FlowRunFilterState(type=FlowRunFilterStateType(any_=list(IN_FLIGHT if in_flight else ENDED))),
            expected_start_time=FlowRunFilterExpectedStartTime(after_=after) if after else None,
        )
        found: list[FlowRun] = []
        while True:
            page = client.read_flow_runs(
                flow_run_filter=runs_filter,
                limit=PAGE,
                offset=len(found),
                deployment_filter=DeploymentFilter(id=DeploymentFilterId(any_=[deployment.id])),
            )
            found += page
            if len(page) < PAGE:
                break
    return [_delivery_run(r) for r in found if _delivers(r.parameters, config, model_name)]


def _delivers(parameters: dict[str, Any], config: Config, model_name: str) -> bool:
    """Whether a CD run with `parameters` delivers `model_name`, which `config`'s use case registers."""
    if parameters.get("model_name"):
        return parameters["model_name"] == model_name
    if parameters.get("use_case"):
        return parameters["use_case"] == config.use_case
    return model_name == load_config().tracking.model_name  # CD's default: the stack's default use case


@task(**IO_RETRIES)
def find_undelivered(config: Config, model_name: str) -> list[listings.Registration]:
    """READY versions without a delivery decision (`deployment` tag), oldest first."""
    return listings.undelivered_versions(registry.connect(config), model_name)


@task(**IO_RETRIES)
def start_delivery(model_name: str, version: str, attempt: int, use_case: str | None = None) -> str:
    """Start CD for the version; returns its flow run id. Safe to retry: the key makes a second call return the same run."""
    run = run_deployment(
        CD_DEPLOYMENT,
        parameters={"version": version, "model_name": model_name, **({"use_case": use_case} if use_case else {})},
        timeout=0,
        # Two reconciliations at once (the schedule and `mlops up`) compute the same key: one run.
        idempotency_key=f"reconcile:{model_name}:v{version}:attempt-{attempt}",
        tags=["reconciled"],
        as_subflow=False,  # a delivery of its own, as if the webhook had started it: not cancelled with this run
    )
    return str(run.id)
