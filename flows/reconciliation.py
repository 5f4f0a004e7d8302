"""Delivery reconciliation: every registered version gets a delivery decision, even when its webhook was lost."""

from __future__ import annotations

import time
from dataclasses import replace
from typing import Any

from prefect import flow, runtime
from prefect.artifacts import create_markdown_artifact
from prefect.deployments import run_deployment
from prefect.logging import get_run_logger

from mlops import render
from mlops.config import load_config
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

RECONCILE_DEPLOYMENT = "delivery-reconciliation/reconcile"


def _run_name() -> str:
    return f"reconcile-{runtime.flow_run.parameters.get('model_name') or load_config().tracking.model_name}"


@flow(name="delivery-reconciliation", flow_run_name=_run_name)
def delivery_reconciliation(
    model_name: str | None = None, min_age_seconds: int = 120, max_attempts: int = 3
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
    every version found and what was done with it.

    Args:
        model_name: The registered model; default: `tracking.model_name` in the config.
        min_age_seconds: Leave versions younger than this to the webhook.
        max_attempts: CD runs without a decision after which a version is left to a person.
    """
    logger = get_run_logger()
    config = load_config()
    name = model_name or config.tracking.model_name
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
            findings[i] = replace(found, flow_run_id=start_delivery(name, found.version, found.attempt))
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
    create_markdown_artifact(
        key="delivery-reconciliation", markdown=render.reconciliation_markdown(name, champion_version, findings)
    )
    return {
        "model_name": name,
        "champion": champion_version,
        "started": {f.version: f.flow_run_id for f in findings if f.flow_run_id},
        "skipped": {f.version: f.action for f in findings if not f.flow_run_id},
    }


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
