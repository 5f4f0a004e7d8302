"""Delivery reconciliation: every registered version gets a delivery decision, even when its webhook was lost."""

from __future__ import annotations

import time
from dataclasses import replace
from typing import Any

from prefect import flow
from prefect.artifacts import create_markdown_artifact
from prefect.deployments import run_deployment
from prefect.logging import get_run_logger

from mlops import render
from mlops.config import Config, config_for_model, config_named, load_config, stack_use_cases
from tasks.delivery import find_champion
from tasks.reconciliation import (
    GAVE_UP,
    HELD,
    START,
    find_undelivered,
    open_since,
    plan_deliveries,
    read_delivery_runs,
    start_delivery,
)
from tasks.runs import UseCase, run_name, run_parameter

RECONCILE_DEPLOYMENT = "delivery-reconciliation/reconcile"


def _run_name() -> str:
    return run_name("reconcile", run_parameter("model_name") or run_parameter("use_case") or "all")


@flow(name="delivery-reconciliation", flow_run_name=_run_name)
def delivery_reconciliation(
    model_name: str | None = None,
    min_age_seconds: int = 120,
    max_attempts: int = 3,
    use_case: UseCase | None = None,  # type: ignore[valid-type]
) -> dict[str, Any]:
    """Start continuous delivery for every registered version that has no delivery decision yet.

    The MLflow webhook that starts CD is fire-and-forget: a version registered while the receiver
    or the Prefect server is down would never be delivered. This flow (every 5 minutes, and once
    from `mlops up`) lists the READY versions without a `deployment` tag (CD writes `promoted`,
    `rejected` or `rolled_back` on every decision) and starts `continuous-delivery/deploy-model`
    for each, oldest first, except a version that
    - has a CD run scheduled, pending, running or paused: never two deliveries of one version at once;
    - was registered less than `min_age_seconds` ago: the webhook's own CD run may not exist yet;
    - is the champion (CD for it is a no-op), or is older than the champion: superseded, since
      delivering it now could take production back to an older model (run CD by hand for it);
    - had a CD run cancelled (a person stopped it), or `max_attempts` CD runs that ended without a
      decision (failed, crashed): left to a person, not retried every few minutes.
    Prefect is read before the registry: a CD run that ends between the two reads tagged its decision
    before it ended, so its version is seen either in flight or decided. Each start carries an
    idempotency key (model, version, attempt): two reconciliations at once start one CD run, and CD
    itself is a no-op for a version decided meanwhile. The `delivery-reconciliation` artifact lists
    every version found and what was done with it, per use case.

    Args:
        model_name: The registered model; default: every use case's (`use_case` narrows it to one).
        min_age_seconds: Leave versions younger than this to the webhook.
        max_attempts: CD runs without a decision after which a version is left to a person.
        use_case: Reconcile this use case only (a folder `usecases/<name>/`); default: every use case of the stack.
    """
    if use_case or model_name:  # a model no use case's config names (registered by hand): the stack's default's
        configs = [load_config(use_case=use_case) if use_case else config_for_model(model_name) or load_config()]
    else:
        configs = [config_named(name) for name in stack_use_cases()]
    results, reports = [], []
    for config in configs:
        result, report = _reconcile(config, model_name or config.tracking.model_name, min_age_seconds, max_attempts)
        results.append(result)
        reports.append(report)
    create_markdown_artifact(key="delivery-reconciliation", markdown="\n\n".join(reports))
    return results[0] if len(results) == 1 else {"use_cases": {r["use_case"]: r for r in results}}


def _use_case_of(config: Config, model_name: str) -> str | None:
    """The `use_case` CD is started with: the config's folder when it registers `model_name`, else none (CD finds it)."""
    return config.use_case if config.tracking.model_name == model_name else None


def _reconcile(config: Config, name: str, min_age_seconds: int, max_attempts: int) -> tuple[dict[str, Any], str]:
    """One use case's model: the deliveries started, what was left and why; and its part of the report."""
    logger = get_run_logger()
    in_flight = read_delivery_runs(config, name, in_flight=True)
    registrations = find_undelivered(config, name)
    champion = find_champion(config, name)
    champion_version = champion.version if champion else None
    since = open_since(registrations, champion_version)
    ended = read_delivery_runs(config, name, in_flight=False, since=since) if since is not None else []
    findings = plan_deliveries(
        registrations, champion_version, in_flight + ended, time.time(), min_age_seconds, max_attempts
    )

    for i, found in enumerate(findings):
        if found.action == START:
            findings[i] = replace(
                found, flow_run_id=start_delivery(name, found.version, found.attempt, _use_case_of(config, name))
            )
            logger.info(
                "started CD for %s v%s (attempt %d): flow run %s",
                name,
                found.version,
                found.attempt,
                findings[i].flow_run_id,
            )
        elif found.action in (HELD, GAVE_UP):
            logger.warning(
                "%s v%s has no delivery decision and is %s: %s", name, found.version, found.action, found.detail
            )
    result = {
        "use_case": config.name,
        "model_name": name,
        "champion": champion_version,
        "started": {f.version: f.flow_run_id for f in findings if f.flow_run_id},
        "skipped": {f.version: f.action for f in findings if not f.flow_run_id},
    }
    return result, render.reconciliation_markdown(name, champion_version, findings)


def start_reconciliation(
    prefect_api_url: str | None = None, prefect_api_auth_string: str | None = None, **parameters: Any
) -> str:
    """Start one run of the `delivery-reconciliation/reconcile` deployment now; returns its flow run id at once.

    For `mlops up`: the worker runs it like the scheduled runs, with the worker's config and MLflow.

    Args:
        prefect_api_url: The Prefect API to start it on; default: the current PREFECT_API_URL.
        prefect_api_auth_string: "user:password" when that server has API auth; default: the current PREFECT_API_AUTH_STRING.
        **parameters: The flow's parameters (`model_name`, `min_age_seconds`, `max_attempts`); default: the deployment's.
    """
    from prefect.settings import (
        PREFECT_API_AUTH_STRING,
        PREFECT_API_URL,
        temporary_settings,
    )

    updates = {
        setting: value
        for setting, value in ((PREFECT_API_URL, prefect_api_url), (PREFECT_API_AUTH_STRING, prefect_api_auth_string))
        if value
    }
    with temporary_settings(updates=updates):
        run = run_deployment(RECONCILE_DEPLOYMENT, parameters=parameters, timeout=0, as_subflow=False)
    return str(run.id)
