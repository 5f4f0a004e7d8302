"""Delivery tasks: the gates a model version passes on a live staging service, and what follows them."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from prefect import runtime, task
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.client.orchestration import get_client
from prefect.events import emit_event
from prefect.exceptions import FlowPauseTimeout
from prefect.flow_runs import pause_flow_run
from prefect.input import RunInput
from prefect.logging import get_run_logger
from prefect.states import Running
from prefect.transactions import Transaction
from pydantic import Field

from mlops import render
from mlops.adapters import cards, listings, loadtest, registry, service_checks, sources
from mlops.config import USE_CASE_LABEL, Config
from mlops.domain import modeling
from mlops.domain.checks import Check, failures
from mlops.domain.evaluation import evaluate, predict_outputs
from mlops.domain.gates import comparable_rows, compare_with_champion, decide
from mlops.domain.split import split_frame
from tasks.retries import IO_RETRIES, retry_unless
from tasks.runs import remember_for_rollback

MAX_SKEW = 1e-6  # live predictions must equal the offline model's (train/serve skew)


class VersionNotReady(RuntimeError):
    """The version is still being registered (a webhook can arrive before it is READY); retried."""


class VersionUnusable(LookupError):
    """The version does not exist or failed to register; no retry can fix it."""


class GatesFailed(RuntimeError):
    """A staging gate failed: raised inside the delivery transaction so its rollback hooks run."""

    def __init__(self, gates: list[Check]):
        self.gates = gates
        super().__init__("; ".join(failures(gates)))


@task(retries=30, retry_delay_seconds=1, retry_condition_fn=retry_unless(VersionUnusable))
def wait_for_version(config: Config, model_name: str, version: str) -> registry.VersionRef:
    """The registered version once it is READY (a bounded wait: 30 tries a second apart)."""
    found = registry.version(registry.connect(config), model_name, version)
    if found is None:
        raise VersionUnusable(f"{model_name} has no version {version}")
    if found.status == "FAILED_REGISTRATION":
        raise VersionUnusable(f"{model_name} version {version} failed to register")
    if found.status != "READY":
        raise VersionNotReady(f"{model_name} version {version} is {found.status}, not READY yet")
    return found


@task(**IO_RETRIES)
def find_champion(config: Config, model_name: str) -> registry.VersionRef | None:
    """The version behind `champion`; None before the first promotion (a registry error raises)."""
    return registry.champion(registry.connect(config), model_name)


@task
def load_holdout(config: Config, data_window: str | None, workdir: Path) -> Path:
    """Rebuild the holdout the version was evaluated on in CT, from its lineage tag (the config's window without one)."""
    workdir.mkdir(parents=True, exist_ok=True)
    path = workdir / "holdout.parquet"
    split_frame(sources.load_labelled_window(config, data_window).frame, config)[1].to_parquet(path)
    return path


@task
def verify_contract(config: Config, endpoint: str, holdout: Path) -> Check:
    """Input-schema tests on the live service: valid rows answered, bad requests refused, service up."""
    cases = service_checks.run_contract_tests(endpoint, pd.read_parquet(holdout), config)
    create_table_artifact(key="contract-tests", table=render.check_rows(cases), description="Live input-schema tests")
    failed = [c.name for c in cases if not c.passed]
    return Check(
        name="contract",
        passed=not failed,
        observed=len(cases) - len(failed),
        required=len(cases),
        detail=f"{len(cases) - len(failed)}/{len(cases)} cases passed"
        + (f"; failed: {', '.join(failed)}" if failed else ""),
    )


@task
def verify_live_performance(
    config: Config, endpoint: str, holdout: Path, candidate: registry.VersionRef, champion: registry.VersionRef | None
) -> Check:
    """The holdout through the live endpoint: equal to offline predictions, and the gates pass against the champion."""
    test = pd.read_parquet(holdout)
    X, _ = modeling.features_and_target(test, config)
    registry.connect(config)
    offline_model = registry.load_model(candidate)
    offline = predict_outputs(offline_model, X, config.task)
    live = service_checks.predict_live(endpoint, X)
    if np.shape(live) != np.shape(offline):  # e.g. labels where the model's class probabilities were expected
        detail = (
            f"the service answers predictions of shape {np.shape(live)}, the registered model's are {np.shape(offline)}"
        )
        return Check(name="live performance", passed=False, observed=float("inf"), required=MAX_SKEW, detail=detail)
    skew = float(np.max(np.abs(live - offline)))
    classes = getattr(offline_model, "classes_", None)
    comparison = None
    if champion is not None and champion.version != candidate.version:
        rows, note = comparable_rows(
            test, config, champion.trained_on, champion.tags.get("data_hash"), candidate.tags.get("data_hash")
        )
        champion_outputs = (
            predict_outputs(registry.load_model(champion), X.loc[rows], config.task) if rows.any() else None
        )
        comparison = compare_with_champion(test, live, champion_outputs, classes, rows, note, champion.version, config)
    live_eval = evaluate(test, live, classes, config)
    decision = decide(live_eval, config, comparison)
    checks = [
        *decision.checks,
        Check(
            name="train/serve skew",
            passed=skew <= MAX_SKEW,
            observed=skew,
            required=MAX_SKEW,
            detail=f"max |live - offline| over {len(test)} rows",
        ),
    ]
    create_table_artifact(
        key="live-metrics", table=render.evaluation_rows(live_eval), description="Metrics of the live staging service"
    )
    create_markdown_artifact(
        key="live-performance",
        markdown=render.decision_markdown(decision.model_copy(update={"checks": checks}), "live staging service"),
    )
    reasons = failures(checks)
    detail = f"{decision.metric} {decision.candidate:.4f} live, skew {skew:.1e}" + (
        f"; {'; '.join(reasons)}" if reasons else ""
    )
    return Check(name="live performance", passed=not reasons, observed=decision.candidate, detail=detail)


@task
def run_load_test(config: Config, endpoint: str, holdout: Path, run_id: str | None) -> Check:
    """Locust against the live service; latency, throughput and errors against the SLOs; logged to MLflow."""
    features = modeling.features_and_target(pd.read_parquet(holdout), config)[0]
    payloads = loadtest.write_payloads(
        features.sample(min(500, len(features)), random_state=0), holdout.with_name("payloads.jsonl")
    )
    get_run_logger().info(
        "load test: %d users for %d s against %s", config.load_test.users, config.load_test.seconds, endpoint
    )
    result = loadtest.run_locust(endpoint, payloads, config.load_test, holdout.parent / "locust")
    if result.requests == 0:  # nothing finished: no measurement at all (seen once under a saturated machine)
        get_run_logger().warning(
            "load test: no request finished in %d s; running it once more", config.load_test.seconds
        )
        result = loadtest.run_locust(endpoint, payloads, config.load_test, holdout.parent / "locust")
    checks = loadtest.check_slos(result, config.slo)
    create_table_artifact(key="load-test", table=render.check_rows(checks), description=f"{result.requests} requests")
    if run_id:
        client = registry.connect(config)
        for key, value in {
            "load_rps": result.rps,
            "load_p50_ms": result.p50_ms,
            "load_p95_ms": result.p95_ms,
            "load_p99_ms": result.p99_ms,
            "load_error_rate": result.error_rate,
        }.items():
            client.log_metric(run_id, key, value)
        client.log_dict(run_id, result.model_dump(), "delivery/load_test.json")
    failed = [f"{c.name} {c.observed:.4g} vs {c.required:.4g}" for c in checks if not c.passed]
    summary = f"{result.rps:.0f} req/s, p95 {result.p95_ms:.0f} ms, p99 {result.p99_ms:.0f} ms, errors {result.error_rate:.2%}"
    return Check(
        name="load test", passed=not failed, detail=summary + (f"; failed: {', '.join(failed)}" if failed else "")
    )


class ProductionBreached(RuntimeError):
    """Production broke the SLOs while CD watched it after the promotion: raised so the delivery rolls back."""


@task  # no retries: inside CD's transaction a failed attempt rolls the whole delivery back (Prefect 3.9)
def watch_production(config: Config, endpoint: str, holdout: Path) -> Check:
    """Probe production with holdout rows for `delivery.watch_seconds` and read its /metrics against the SLOs."""
    seconds = config.delivery.watch_seconds
    if seconds <= 0:
        return Check(name="production watch", passed=True, detail="off (delivery.watch_seconds: 0)")
    get_run_logger().info("watching production at %s for %.0f s", endpoint, seconds)
    features = modeling.features_and_target(pd.read_parquet(holdout), config)[0]
    sample = features.sample(min(200, len(features)), random_state=1)
    check = service_checks.watch_check(
        service_checks.watch_service(endpoint, sample, seconds, config.delivery.watch_rps), config
    )
    get_run_logger().info("production watch: %s", check.detail)
    return check


@task  # no retries: inside CD's transaction a failed attempt rolls the whole delivery back (Prefect 3.9)
def promote(config: Config, model_name: str, version: str, previous: str | None, gates: list[Check]) -> None:
    """Point `champion` at the version (the one before becomes `previous_champion`) and tag it; production serves it."""
    remember_for_rollback(config=config, model_name=model_name, previous=previous)
    client = registry.connect(config)
    try:
        registry.promote(client, model_name, version)
        client.set_model_version_tag(model_name, version, "deployment_at", now_utc())
        client.set_model_version_tag(model_name, version, "deployment", "promoted")
        client.set_model_version_tag(model_name, version, "deployment_run", str(runtime.flow_run.id))
        client.set_model_version_tag(model_name, version, "deployment_gates", render.checks_summary(gates))
    except Exception:
        # A failed step is not compensated by its own hook (only completed ones are): undo the alias here.
        _put_alias_back(config, model_name, previous)
        raise


def _put_alias_back(config: Config, model_name: str, previous: str | None) -> None:
    registry.restore_champion(registry.connect(config), model_name, previous)
    get_run_logger().warning(
        "rolled back the %s alias of %s to %s", registry.CHAMPION, model_name, f"v{previous}" if previous else "nothing"
    )


@promote.on_rollback
def _restore_alias(txn: Transaction) -> None:
    """Rollback hook (a later step failed): `champion` back on the version it named before (removed when none)."""
    _put_alias_back(txn.get("config"), txn.get("model_name"), txn.get("previous"))


class Approval(RunInput):
    """The form a manual-approval CD run waits for (the Prefect UI renders it; `mlops approve` and the API send it)."""

    approve: bool = Field(description="Promote this version to production (unticked: reject it)")
    approver: str = Field(min_length=1, max_length=200, description="Who decides: a name or an e-mail address")
    comment: str = Field(default="", max_length=2000, description="Why, for the version's record")


APPROVAL_POLL_S = 2  # how often the paused run looks for the answer


def await_approval(config: Config, model_name: str, version: str, gates: list[Check], links: str) -> Check:
    """Pause the run for a person's decision on the passed gates; no answer within the timeout rejects.

    Called from the flow, not as a task: a pause belongs to the flow run. The decision (who, when,
    why) is tagged on the version: `approval`, `approval_by`, `approval_at`, `approval_comment`.
    """
    timeout = config.delivery.approval_timeout_s
    description = (
        f"{render.gates_markdown(model_name, version, 'staging gates passed, awaiting approval', gates)}\n{links}\n\n"
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


def now_utc() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


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


# The decisions' events, for `mlops.service.<environment>` (notifications: deployments/notifications.yaml).
PROMOTED, REJECTED, ROLLED_BACK = (
    "mlops.deployment.promoted",
    "mlops.deployment.rejected",
    "mlops.deployment.rolled_back",
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
