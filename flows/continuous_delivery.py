"""Continuous delivery: staging via Terraform → contract, live-performance and load gates → promote, as one transaction."""

from __future__ import annotations

from prefect import flow, runtime
from prefect.artifacts import create_markdown_artifact
from prefect.concurrency.sync import concurrency
from prefect.logging import get_run_logger
from prefect.states import Completed, State
from prefect.transactions import transaction

from mlops import render
from mlops.adapters import registry
from mlops.adapters.registry import VersionRef
from mlops.config import Config, config_for_model, load_config, use_case_parameter
from mlops.domain.checks import Check
from tasks.delivery import (
    PROMOTED,
    REJECTED,
    ROLLED_BACK,
    GatesFailed,
    ProductionBreached,
    await_approval,
    emit_decision,
    find_champion,
    load_holdout,
    promote,
    publish_records,
    run_load_test,
    tag_decision,
    verify_contract,
    verify_live_performance,
    wait_for_version,
    watch_production,
)
from tasks.infra import deploy_environment, serving_version
from tasks.registry import config_of_version
from tasks.runs import ensure_locks, environment_locks, require_servers, tag_this_run
from tasks.shadow import judge_shadow, now

UseCase = use_case_parameter()  # the folders of usecases/ when the flow is deployed: the form offers them


def _run_name() -> str:
    params = runtime.flow_run.parameters
    name = params.get("model_name") or load_config(use_case=params.get("use_case")).tracking.model_name
    return f"cd-{name}-v{params['version']}"


@flow(name="continuous-delivery", flow_run_name=_run_name)
def continuous_delivery(
    version: int | str,
    model_name: str | None = None,
    use_case: UseCase | None = None,  # type: ignore[valid-type]
    force: bool = False,
) -> State:
    """Deliver one registered model version to production, or reject it with reasons.

    Staging is planned and applied with Terraform (the saved plan is what gets applied), then the
    live service must pass the input-schema contract tests, the per-segment performance gates with
    predictions equal to the offline model's, and a locust load test against the SLOs in mlops.yaml.
    With `delivery.approval: manual` the run then pauses for a person's decision (the Prefect UI's
    Resume form, `mlops approve`, or the API); a rejection or no answer within
    `delivery.approval_timeout_s` rejects the version. All pass: production is applied with this
    version and the `champion` alias moves to it; with `delivery.strategy: shadow`, production first serves the
    champion with this version scoring its traffic unseen, and the shadow gate (agreement, latency, the metric on
    labelled rows) decides before the swap. The whole delivery is one Prefect transaction: when a gate fails, or any step after it (the
    production apply, the alias move) fails, its rollback hooks put staging and production back on
    the champion (or destroy them when there is none) and the alias back where it was, so production
    never serves a version that `champion` does not name. A rejected version is tagged `rejected`
    with the reason. Re-running for the version that already serves production is a no-op.

    Args:
        version: The MLflow model version to deliver, e.g. 3 (a number or its text: the registry's events
            and `prefect deployment run --param version=3` send either).
        model_name: The registered model; default: the use case's `tracking.model_name`.
        use_case: The use case whose staging and production serve it (the registration event names it from the
            version's `use_case` tag). Default: the use case that registers `model_name` (the stack's default
            config first, then each folder's); a model no use case registers is skipped.
        force: Deliver again a version that already has a decision (promoted or rejected). Without it such
            a run is a no-op, so a late webhook or a reconciliation never decides twice.
    """
    config = load_config(use_case=use_case) if use_case else config_for_model(model_name)
    version = str(version)
    if config is None or (model_name and model_name != config.tracking.model_name):
        why = (
            f"{model_name} v{version} is not delivered: no use case of this project registers {model_name}"
            if config is None
            else f"{model_name} v{version} is not delivered: use case {config.name} registers {config.tracking.model_name}"
        )
        create_markdown_artifact(key="cd-decision", markdown=f"# {why}")
        return Completed(message=why, data={"status": "skipped", "version": version})
    name = config.tracking.model_name
    require_servers(config)
    tag_this_run([f"use-case:{config.name}"])
    candidate = wait_for_version(config, name, version)
    locks = environment_locks(config)
    ensure_locks(locks)
    with concurrency(locks, occupy=1, strict=True):  # one delivery at a time per environment, in-process too
        return _deliver(config, name, version, candidate, force)


def _deliver(config: Config, name: str, version: str, candidate: VersionRef, force: bool) -> State:
    """Everything after the version is READY, holding both environments."""
    logger = get_run_logger()
    candidate = wait_for_version(config, name, version)  # again, now that no other delivery runs: its decision tags
    # Its holdout as it was trained, not as the file is now.
    config = config_of_version(config, candidate.run_id, f"{name} v{version}")
    champion = find_champion(config, name)
    previous = champion.version if champion else None
    if previous == version and serving_version(config, "production") == version:
        create_markdown_artifact(
            key="cd-decision", markdown=f"# {name} v{version} already serves production: nothing to do"
        )
        return Completed(
            message=f"{name} v{version} already serves production", data={"status": "noop", "version": version}
        )
    decided = candidate.tags.get("deployment")
    if decided and not force:  # one decision per version: a late webhook, a reconciliation, a second trigger
        why = f"{name} v{version} was already {decided} ({candidate.tags.get('deployment_run', 'an earlier run')}); force=true delivers it again"
        create_markdown_artifact(key="cd-decision", markdown=f"# {why}")
        return Completed(message=why, data={"status": "noop", "version": version, "decision": decided})

    workdir = config.state_dir / "runs" / str(runtime.flow_run.id)
    restore_to = previous if previous != version else None
    gates: list[Check] = []
    try:
        with transaction():
            try:
                endpoint = deploy_environment(config, "staging", name, version, restore_to)
                holdout = load_holdout(config, candidate.data_window, workdir)
                gates.append(verify_contract(config, endpoint, holdout))
                gates.append(verify_live_performance(config, endpoint, holdout, candidate, champion))
                gates.append(run_load_test(config, endpoint, holdout, candidate.run_id))
            except Exception as exc:  # a broken deployment is a failed gate too
                gates.append(
                    Check(name="staging deployment", passed=False, detail=f"{type(exc).__name__}: {exc}"[:500])
                )
                raise GatesFailed(gates) from exc
            if not all(g.passed for g in gates):
                raise GatesFailed(gates)
            if (
                config.delivery.approval == "manual"
            ):  # a person decides, seeing the gates; staging keeps serving meanwhile
                gates.append(await_approval(config, name, version, gates, _links(config, candidate)))
                if not gates[-1].passed:
                    raise GatesFailed(gates)
            if config.delivery.strategy == "shadow" and restore_to is not None:  # beside the champion first
                since = now()
                deploy_environment(config, "production", name, restore_to, restore_to, shadow=version)
                gates += judge_shadow(config, restore_to, version, since)
                if not all(g.passed for g in gates):
                    raise GatesFailed(gates)
            production = deploy_environment(config, "production", name, version, restore_to)
            promote(config, name, version, previous, gates)
            gates.append(watch_production(config, production, holdout))  # the baking period, SageMaker-style
            if not gates[-1].passed:  # raised inside the transaction: production and the aliases go back
                raise ProductionBreached(f"production watch: {gates[-1].detail}")
    except GatesFailed as failed:
        reason = str(failed)
        _reject(config, name, version, previous, gates, reason)
        if failed.__cause__ is not None:
            raise failed.__cause__  # noqa: B904 - the step's own error, as it was raised
        return Completed(
            name="Rejected",
            message=reason,
            data={"status": "rejected", "version": version, "reason": reason, "gates": [g.model_dump() for g in gates]},
        )
    except Exception as exc:  # the gates passed but production or the alias move failed: rolled back, say so
        reason = f"rolled back after the gates passed: {type(exc).__name__}: {exc}"[:1000]
        tag_decision(config, name, version, "rolled_back", gates, reason)
        emit_decision(ROLLED_BACK, "production", name, version, gates, reason, use_case=config.name)
        outcome = f"rolled back; production back on {f'v{previous}' if previous else 'nothing'}"
        create_markdown_artifact(key="cd-decision", markdown=render.gates_markdown(name, version, outcome, gates))
        publish_records(config, name, version, outcome, gates)
        logger.error("%s v%s %s", name, version, reason)
        raise
    emit_decision(PROMOTED, "production", name, version, gates, use_case=config.name)
    outcome = f"promoted, serving at {production}"
    create_markdown_artifact(key="cd-decision", markdown=render.gates_markdown(name, version, outcome, gates))
    publish_records(config, name, version, outcome, gates)
    logger.info("promoted %s v%s: production at %s", name, version, production)
    return Completed(
        message=f"promoted v{version}",
        data={
            "status": "promoted",
            "version": version,
            "endpoint": production,
            "gates": [g.model_dump() for g in gates],
        },
    )


def _links(config: Config, candidate: VersionRef) -> str:
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


def _reject(config, name: str, version: str, champion: str | None, gates: list[Check], reason: str) -> None:
    """After the rollback: tag the version rejected, say why and where staging went."""
    tag_decision(config, name, version, "rejected", gates, reason)
    emit_decision(REJECTED, "staging", name, version, gates, reason, use_case=config.name)
    rolled_back = f"staging back to v{champion}" if champion else "staging destroyed (no champion yet)"
    outcome = f"rejected; {rolled_back}"
    create_markdown_artifact(key="cd-decision", markdown=render.gates_markdown(name, version, outcome, gates))
    publish_records(config, name, version, outcome, gates)
    get_run_logger().warning("rejected %s v%s: %s; %s", name, version, reason, rolled_back)
