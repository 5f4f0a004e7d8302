"""Continuous delivery: staging via Terraform → contract, live-performance and load gates → promote, as one transaction."""

from __future__ import annotations

from prefect import flow, runtime
from prefect.states import State
from prefect.transactions import transaction

from mlops.config import Config, config_for_model, load_config
from tasks.approval import await_approval
from tasks.decision import Decision, decided_already, judge, publish_decision, serving_already, skipped
from tasks.delivery import find_champion, load_holdout, promote, wait_for_version
from tasks.gates import Gates, GatesFailed, run_load_test, verify_contract, verify_live_performance, watch_production
from tasks.infra import deploy_environment, serving_version
from tasks.registry import config_of_version
from tasks.runs import (
    UseCase,
    holding_environments,
    require_servers,
    run_model_name,
    run_name,
    run_parameter,
    tag_this_run,
)
from tasks.shadow import judge_shadow, now


def _run_name() -> str:
    return run_name("cd", run_model_name(), f"v{run_parameter('version')}")


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
        return _conclude(None, skipped(model_name, version, config), None)
    name = config.tracking.model_name
    require_servers(config)
    tag_this_run([f"use-case:{config.name}"])
    wait_for_version(config, name, version)  # READY before it queues for the environments
    with holding_environments(config):  # one delivery at a time per environment, in-process too
        return _conclude(config, *_deliver(config, name, version, force))


def _deliver(config: Config, name: str, version: str, force: bool) -> tuple[Decision, Exception | None]:
    """Everything after the version is READY, holding both environments: the decision, and the error that ended
    the delivery (None when nothing was tried or it was promoted; GatesFailed when a gate said no)."""
    candidate = wait_for_version(config, name, version)  # again, now that no other delivery runs: its decision tags
    # Its holdout as it was trained, not as the file is now.
    config = config_of_version(config, candidate.run_id, f"{name} v{version}")
    champion = find_champion(config, name)
    previous = champion.version if champion else None
    if previous == version and serving_version(config, "production") == version:
        return serving_already(name, version), None
    if candidate.tags.get("deployment") and not force:  # one decision per version: a late webhook, a reconciliation
        return decided_already(candidate), None

    workdir = config.state_dir / "runs" / str(runtime.flow_run.id)
    restore_to = previous if previous != version else None
    gates, production, error = Gates(), None, None
    try:
        with transaction():  # a failure below runs the on_rollback hooks of the steps that completed, newest first
            staging = deploy_environment(config, "staging", name, version, restore_to)
            holdout = load_holdout(config, candidate.data_window, workdir)
            gates.add(verify_contract(config, staging, holdout))
            gates.add(verify_live_performance(config, staging, holdout, candidate, champion))
            gates.add(run_load_test(config, staging, holdout, candidate.run_id))
            gates.require()  # GatesFailed rejects; a step that breaks from here on is rolled back
            if config.delivery.approval == "manual":  # a person decides, seeing the gates; staging keeps serving
                gates.add(await_approval(config, candidate, gates.checks))
                gates.require()
            if config.delivery.strategy == "shadow" and restore_to is not None:  # beside the champion first
                since = now()
                deploy_environment(config, "production", name, restore_to, restore_to, shadow=version)
                gates.add(*judge_shadow(config, restore_to, version, since))
                gates.require()
            production = deploy_environment(config, "production", name, version, restore_to)
            promote(config, name, version, previous, gates.checks)
            gates.require_healthy(watch_production(config, production, holdout))  # the baking period, SageMaker-style
    except Exception as exc:  # rolled back already; what it means is judged once, below
        error = exc
    return judge(gates, error, name, version, previous, production), error


def _conclude(config: Config | None, decision: Decision, error: Exception | None) -> State:
    """Publish the decision (once, from here); then the run ends with the step's own error when one broke, else
    with the decision's state (a rejection by a gate is Completed, named Rejected)."""
    publish_decision(config, decision)
    if error is not None and not isinstance(error, GatesFailed):
        raise error  # the step's own error, as it was raised
    return decision.state()
